import type { Logger } from '@nestjs/common';
import { PglnHandlerError, PglnPayloadError } from './errors/index.js';
import type { OutOfSyncReason, PglnNotification } from './interfaces/index.js';
import type { Backoff } from './pgln.backoff.js';
import { HANDLER_FAILED, PAYLOAD_NOT_JSON } from './pgln.messages.js';
import type { Subscription } from './pgln.subscription.js';

/**
 * A resync request in a channel's queue. Notifications queued behind it are held until the
 * out-of-sync handlers it runs have completed; those queued before it are delivered first.
 */
export class SyncMarker {
  /** Resolves once the marker has been processed (or dropped at close). */
  readonly done: Promise<void>;
  resolve!: () => void;

  constructor(
    readonly reason: OutOfSyncReason,
    /** Resolves true once LISTEN ran on the connection this marker belongs to; false if that connection died first. */
    readonly listened: Promise<boolean>,
    /** The subscriptions to bring in sync; all of the channel's when undefined. */
    readonly only?: readonly Subscription[],
  ) {
    this.done = new Promise((resolve) => (this.resolve = resolve));
  }
}

type Item = PglnNotification | SyncMarker;

function isPromiseLike(value: unknown): value is PromiseLike<unknown> {
  return typeof (value as PromiseLike<unknown> | null)?.then === 'function';
}

/**
 * One LISTENed channel: its subscriptions and a single FIFO of notifications and sync markers,
 * processed one item at a time. Synchronous handlers are called straight from the socket's data
 * event; a promise returned by a handler is awaited before the next item.
 */
export class Channel {
  /** Replaced, never mutated, so a delivery in progress keeps a stable list. */
  subscriptions: readonly Subscription[] = [];
  private readonly queue: (Item | undefined)[] = [];
  private head = 0;
  private busy = false;
  private closed = false;
  private idle?: { promise: Promise<void>; resolve: () => void };
  private readonly abort = new AbortController();
  /** Whether LISTEN ran for this channel on the current connection (see {@link SyncMarker.listened}). */
  listened: Promise<boolean> = Promise.resolve(false);

  constructor(
    readonly name: string,
    private readonly logger: Logger,
    private readonly backoff: Backoff,
  ) {}

  add(subscription: Subscription): void {
    this.subscriptions = [...this.subscriptions, subscription];
  }

  remove(subscription: Subscription): void {
    this.subscriptions = this.subscriptions.filter((s) => s !== subscription);
  }

  /** Queues a notification: delivered after everything queued before it, including resyncs. */
  push(item: Item): void {
    if (this.closed) return;
    this.queue.push(item);
    if (!this.busy) this.drain();
  }

  /** Queues a resync of `only` (or every subscription) to run once `listened` resolves true. */
  sync(reason: OutOfSyncReason, listened: Promise<boolean>, only?: readonly Subscription[]): SyncMarker {
    this.listened = listened;
    const marker = new SyncMarker(reason, listened, only);
    if (this.closed) marker.resolve();
    else this.push(marker);
    return marker;
  }

  /** Resolves when no item is being processed. */
  settled(): Promise<void> {
    if (!this.busy) return Promise.resolve();
    this.idle ??= (() => {
      let resolve!: () => void;
      const promise = new Promise<void>((r) => (resolve = r));
      return { promise, resolve };
    })();
    return this.idle.promise;
  }

  /**
   * Stops the channel: queued items are dropped, no handler starts any more, a resync waiting
   * to retry gives up. Resolves when the item in progress (if any) has finished.
   */
  close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      this.abort.abort();
      for (let i = this.head; i < this.queue.length; i++) {
        const item = this.queue[i];
        if (item instanceof SyncMarker) item.resolve();
      }
      this.queue.length = 0;
      this.head = 0;
    }
    return this.settled();
  }

  private readonly drain = (): void => {
    this.busy = true;
    while (this.head < this.queue.length && !this.closed) {
      const item = this.queue[this.head]!;
      this.queue[this.head++] = undefined;
      if (this.head === this.queue.length) {
        this.queue.length = 0;
        this.head = 0;
      } else if (this.head >= 1024 && this.head * 2 >= this.queue.length) {
        this.queue.splice(0, this.head);
        this.head = 0;
      }
      const pending = item instanceof SyncMarker ? this.resync(item) : this.deliver(item, this.subscriptions, 0);
      if (pending) {
        void pending.then(this.drain);
        return;
      }
    }
    this.busy = false;
    if (this.idle) {
      this.idle.resolve();
      this.idle = undefined;
    }
  };

  /** Calls every subscription's notification handler in order; returns a promise only if one went async. */
  private deliver(
    notification: PglnNotification,
    subscriptions: readonly Subscription[],
    from: number,
  ): Promise<void> | undefined {
    for (let i = from; i < subscriptions.length; i++) {
      const subscription = subscriptions[i]!;
      const handler = subscription.spec.onNotification;
      if (!handler || !subscription.active || this.closed) continue;
      let result: unknown;
      try {
        result = handler(subscription.spec.json ? this.parse(notification) : notification.payload, notification);
      } catch (error) {
        this.fail(subscription, error);
        continue;
      }
      if (isPromiseLike(result)) {
        return Promise.resolve(result).then(
          () => this.deliver(notification, subscriptions, i + 1),
          (error: unknown) => {
            this.fail(subscription, error);
            return this.deliver(notification, subscriptions, i + 1);
          },
        );
      }
    }
    return undefined;
  }

  private parse(notification: PglnNotification): unknown {
    try {
      return JSON.parse(notification.payload);
    } catch (error) {
      throw new PglnPayloadError(PAYLOAD_NOT_JSON(this.name, (error as Error).message), this.name, { cause: error });
    }
  }

  /** Runs out-of-sync handlers one after another, each retried with backoff until it succeeds. */
  private async resync(marker: SyncMarker): Promise<void> {
    try {
      // False: the connection died before LISTEN completed; the next connection queues its own marker.
      if (!(await marker.listened)) return;
      for (const subscription of marker.only ?? this.subscriptions) {
        const handler = subscription.spec.onOutOfSync;
        for (let attempt = 1; handler && subscription.active && !this.closed; attempt++) {
          const reason = subscription.synced ? marker.reason : subscription.firstReason;
          try {
            await handler({ channel: this.name, reason });
            break;
          } catch (error) {
            this.fail(subscription, error, 'out-of-sync handler; notifications stay held and it is retried');
            try {
              await this.backoff.wait(attempt, this.abort.signal);
            } catch {
              return; // closed while waiting
            }
          }
        }
        if (subscription.active && !this.closed) subscription.markSynced();
      }
    } finally {
      marker.resolve();
    }
  }

  /** Logs a handler failure with its stack and tells the subscription's onError, if any. */
  private fail(subscription: Subscription, cause: unknown, what?: string): void {
    const message = HANDLER_FAILED(subscription.spec.name, this.name) + (what ? ` (${what})` : '');
    const error = new PglnHandlerError(message, this.name, subscription.spec.name, { cause });
    const detail = cause instanceof Error ? (cause.stack ?? cause.message) : String(cause);
    this.logger.error(`${message}: ${detail}`);
    try {
      subscription.spec.onError?.(error);
    } catch (secondary) {
      this.logger.error(`onError of ${subscription.spec.name} threw: ${(secondary as Error)?.stack ?? secondary}`);
    }
  }
}
