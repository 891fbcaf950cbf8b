import type { Logger } from '@nestjs/common';
import { PglnHandlerError, PglnOverflowError, PglnPayloadError } from './errors/index.js';
import type { OutOfSyncReason, PglnNotification } from './interfaces/index.js';
import type { Backoff } from './pgln.backoff.js';
import {
  HANDLER_FAILED,
  OVERFLOW_DROPPED,
  OVERFLOW_RESYNC,
  PAYLOAD_NOT_JSON,
  SLOW_HANDLER,
  SLOW_HANDLER_DONE,
} from './pgln.messages.js';
import type { TurnTimer } from './pgln.turn-timer.js';
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

/** What a channel needs from the listener that owns it. */
export interface ChannelContext {
  readonly logger: Logger;
  readonly backoff: Backoff;
  readonly maxQueuedNotifications: number;
  /** Reports synchronous handlers that block the event loop (see {@link TurnTimer}). */
  readonly turns: TurnTimer;
}

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
  /** Whether LISTEN ran for this channel on the current connection (see {@link SyncMarker.listened}). */
  listened: Promise<boolean> = Promise.resolve(false);
  private queue: (Item | undefined)[] = [];
  private head = 0;
  /** Notifications (not markers) in the queue. */
  private queued = 0;
  private busy = false;
  private closed = false;
  private idle?: { promise: Promise<void>; resolve: () => void };
  private readonly abort = new AbortController();
  /** The async handler in progress (name, start time, whether reported), for slow-handler warnings. */
  private runningName?: string;
  private runningSince = 0;
  private runningWarned = false;

  constructor(
    readonly name: string,
    private readonly context: ChannelContext,
  ) {}

  add(subscription: Subscription): void {
    this.subscriptions = [...this.subscriptions, subscription];
  }

  remove(subscription: Subscription): void {
    this.subscriptions = this.subscriptions.filter((s) => s !== subscription);
  }

  /** Queues a notification: delivered after everything queued before it, including resyncs. */
  push(notification: PglnNotification): void {
    if (this.closed) return;
    if (!this.busy) {
      // Idle means the queue is empty: deliver at once, the common case when handlers keep up.
      this.busy = true;
      const pending = this.deliver(notification, this.subscriptions, 0);
      if (pending) void this.drainAsync(pending);
      // A handler may have queued something meanwhile (a listen() on this channel queues a resync).
      else if (this.head < this.queue.length) this.drain();
      else this.settle();
      return;
    }
    this.queue.push(notification);
    if (++this.queued > this.context.maxQueuedNotifications) this.overflow();
  }

  /** Queues a resync of `only` (or every subscription) to run once `listened` resolves true. */
  sync(reason: OutOfSyncReason, listened: Promise<boolean>, only?: readonly Subscription[]): SyncMarker {
    this.listened = listened;
    const marker = new SyncMarker(reason, listened, only);
    if (this.closed) {
      marker.resolve();
      return marker;
    }
    this.queue.push(marker);
    if (!this.busy) this.drain();
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
      for (const item of this.pending()) if (item instanceof SyncMarker) item.resolve();
      this.queue = [];
      this.head = 0;
      this.queued = 0;
    }
    return this.settled();
  }

  /** Logs, once, a handler that has been running for `thresholdMs` or more. */
  checkSlow(now: number, thresholdMs: number): void {
    const name = this.runningName;
    if (name === undefined || this.runningWarned || now - this.runningSince < thresholdMs) return;
    this.runningWarned = true;
    this.context.logger.warn(SLOW_HANDLER(name, this.name, now - this.runningSince, thresholdMs));
  }

  private pending(): Item[] {
    return this.queue.slice(this.head) as Item[];
  }

  /**
   * Too many notifications are waiting: drop them (markers stay). A resync covers what was dropped
   * for the owners that have an out-of-sync handler here; any other handler is told the count.
   */
  private overflow(): void {
    const dropped = this.queued;
    const markers = this.pending().filter((item): item is SyncMarker => item instanceof SyncMarker);
    this.queue = markers;
    this.head = 0;
    this.queued = 0;
    const { logger, maxQueuedNotifications } = this.context;
    const active = this.subscriptions.filter((s) => s.active);
    const resynced = new Set(active.filter((s) => s.spec.onOutOfSync).map((s) => s.spec.owner));
    if (resynced.size > 0) {
      logger.warn(OVERFLOW_RESYNC(this.name, dropped, maxQueuedNotifications));
      // A resync still waiting in the queue will read the database after all of them: it covers them.
      if (!markers.some((marker) => !marker.only)) this.queue.push(new SyncMarker('overflow', this.listened));
    }
    const uncovered = active.filter((s) => s.spec.onNotification && !resynced.has(s.spec.owner));
    if (uncovered.length === 0) return;
    const names = uncovered.map((s) => s.spec.name);
    const error = new PglnOverflowError(OVERFLOW_DROPPED(this.name, dropped, maxQueuedNotifications, names), this.name, dropped);
    logger.error(error.message);
    for (const subscription of uncovered) this.report(subscription, error);
  }

  /** Processes queued items while they complete synchronously; hands over to {@link drainAsync} when one does not. */
  private drain(): void {
    this.busy = true;
    for (let item = this.shift(); item !== undefined; item = this.shift()) {
      const pending = this.process(item);
      if (pending) {
        void this.drainAsync(pending);
        return;
      }
    }
    this.settle();
  }

  /** Awaits the item in progress, then processes the rest of the queue one item at a time. */
  private async drainAsync(pending: Promise<void>): Promise<void> {
    await pending;
    for (let item = this.shift(); item !== undefined; item = this.shift()) {
      const next = this.process(item);
      if (next) await next;
    }
    this.settle();
  }

  /** Takes the next item off the queue, or undefined when it is empty or the channel closed. */
  private shift(): Item | undefined {
    if (this.head >= this.queue.length || this.closed) return undefined;
    const item = this.queue[this.head]!;
    this.queue[this.head++] = undefined;
    if (this.head === this.queue.length) {
      this.queue.length = 0;
      this.head = 0;
    } else if (this.head >= 1024 && this.head * 2 >= this.queue.length) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
    return item;
  }

  private process(item: Item): Promise<void> | undefined {
    if (item instanceof SyncMarker) return this.resync(item);
    this.queued--;
    return this.deliver(item, this.subscriptions, 0);
  }

  /** No item in progress any more: release whoever waits for the channel to settle. */
  private settle(): void {
    this.busy = false;
    if (this.idle) {
      this.idle.resolve();
      this.idle = undefined;
    }
  }

  /** Calls every subscription's notification handler in order; returns a promise only if one went async. */
  private deliver(
    notification: PglnNotification,
    subscriptions: readonly Subscription[],
    from: number,
  ): Promise<void> | undefined {
    for (let i = from; i < subscriptions.length; i++) {
      const subscription = subscriptions[i]!;
      const handler = subscription.spec.onNotification;
      // Not receiving when removed, or not yet in sync: its own resync, queued behind this notification, covers it.
      if (!handler || !subscription.receiving || this.closed) continue;
      let result: unknown;
      this.context.turns.note(subscription, this.name);
      try {
        result = handler(subscription.spec.json ? this.parse(notification) : notification.payload, notification);
      } catch (error) {
        this.fail(subscription, error);
        continue;
      }
      if (isPromiseLike(result)) return this.awaitHandler(result, subscription, notification, subscriptions, i + 1);
    }
    return undefined;
  }

  /** Waits for an async handler, then delivers the notification to the handlers after it. */
  private async awaitHandler(
    result: PromiseLike<unknown>,
    subscription: Subscription,
    notification: PglnNotification,
    subscriptions: readonly Subscription[],
    next: number,
  ): Promise<void> {
    this.started(subscription);
    try {
      await result;
    } catch (error) {
      this.fail(subscription, error);
    } finally {
      this.finished();
    }
    const rest = this.deliver(notification, subscriptions, next);
    if (rest) await rest;
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
          this.started(subscription);
          try {
            await handler({ channel: this.name, reason });
            break;
          } catch (error) {
            this.fail(subscription, error, 'out-of-sync handler; notifications stay held and it is retried');
          } finally {
            this.finished();
          }
          try {
            await this.context.backoff.wait(attempt, this.abort.signal);
          } catch {
            return; // closed while waiting
          }
        }
        if (subscription.active && !this.closed) subscription.markSynced();
      }
    } finally {
      marker.resolve();
    }
  }

  private started(subscription: Subscription): void {
    this.runningName = subscription.spec.name;
    this.runningSince = Date.now();
    this.runningWarned = false;
  }

  private finished(): void {
    if (this.runningWarned) {
      this.context.logger.warn(SLOW_HANDLER_DONE(this.runningName!, this.name, Date.now() - this.runningSince));
    }
    this.runningName = undefined;
  }

  /** Logs a handler failure with its stack and tells the subscription's onError, if any. */
  private fail(subscription: Subscription, cause: unknown, what?: string): void {
    const message = HANDLER_FAILED(subscription.spec.name, this.name) + (what ? ` (${what})` : '');
    const error = new PglnHandlerError(message, this.name, subscription.spec.name, { cause });
    const detail = cause instanceof Error ? (cause.stack ?? cause.message) : String(cause);
    this.context.logger.error(`${message}: ${detail}`);
    this.report(subscription, error);
  }

  private report(subscription: Subscription, error: PglnHandlerError | PglnOverflowError): void {
    try {
      subscription.spec.onError?.(error);
    } catch (secondary) {
      this.context.logger.error(`onError of ${subscription.spec.name} threw: ${(secondary as Error)?.stack ?? secondary}`);
    }
  }
}
