import type { PglnHandlerError, PglnOverflowError } from './errors/index.js';
import type { OutOfSyncEvent, OutOfSyncReason, PglnNotification } from './interfaces/index.js';

/** What a registration brings: handlers and how to call them. */
export interface SubscriptionSpec {
  /** How logs and errors name the handler: `Class.method`, or `listen(channel)`. */
  readonly name: string;
  /**
   * Who keeps the state the handlers maintain: the provider instance of decorated methods, or the
   * `listen()` call. An out-of-sync handler rebuilds the state of its owner only.
   */
  readonly owner: object;
  readonly onNotification?: (payload: any, notification: PglnNotification) => unknown;
  readonly onOutOfSync?: (event: OutOfSyncEvent) => unknown;
  readonly onError?: (error: PglnHandlerError | PglnOverflowError) => void;
  readonly json?: boolean;
}

/** One registration on one channel: a decorated method, or a `PglnService.listen()` call. */
export class Subscription {
  /** False once removed: none of its handlers is called again. */
  active = true;
  /** True once its out-of-sync handler has completed (or it has none and its LISTEN ran). */
  synced = false;
  /** Active and in sync: notifications reach it (one flag for the hot path). */
  receiving = false;
  /** Settles when the subscription is first in sync; rejects if the listener closes first. */
  readonly ready: Promise<void>;
  private settle!: (error?: Error) => void;

  constructor(
    readonly channel: string,
    readonly spec: SubscriptionSpec,
    /** The reason given to its out-of-sync handler the first time it runs. */
    readonly firstReason: OutOfSyncReason,
  ) {
    this.ready = new Promise<void>((resolve, reject) => {
      this.settle = (error) => (error ? reject(error) : resolve());
    });
    // Nobody may be waiting (decorated handlers); a rejection must not become "unhandled".
    this.ready.catch(() => undefined);
  }

  /** Marks the subscription in sync and releases whoever waits for it. */
  markSynced(): void {
    this.synced = true;
    this.receiving = this.active;
    this.settle();
  }

  /** Deactivates the subscription; a pending `ready` resolves (or rejects with `error`). */
  deactivate(error?: Error): void {
    this.active = false;
    this.receiving = false;
    this.settle(error);
  }
}
