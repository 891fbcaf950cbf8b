import type { StandardSchemaV1 } from '@standard-schema/spec';
import type { PglnHandlerError, PglnOverflowError, PglnPayloadError } from './errors/index.js';
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
  readonly onError?: (error: PglnHandlerError | PglnOverflowError | PglnPayloadError) => void;
  readonly json?: boolean;
  /** Validates each (JSON) payload before `onNotification` gets it: a channel defined with a schema. */
  readonly schema?: StandardSchemaV1;
}

/** One registration on one channel: a decorated method, or a `PglnService.listen()` call. */
export class Subscription {
  /** False once removed: none of its handlers is called again. */
  active = true;
  /** True once its out-of-sync handler has completed (or it has none and its LISTEN ran). */
  synced = false;
  /** Active and in sync: notifications reach it (one flag for the hot path). */
  receiving = false;
  /**
   * While its first sync runs beside its channel's queue: the notifications held for it alone,
   * delivered to it once its out-of-sync handler has completed.
   */
  held?: PglnNotification[];
  /** How many notifications, already queued on its channel when that first sync began, it skips. */
  skip = 0;
  /**
   * The LISTEN after which its out-of-sync handler last read the database: a resync for the same
   * LISTEN has nothing to redo. Undefined when unknown, outdated by an overflow, or (in a first
   * sync) while it waits for the LISTEN it will read after.
   */
  readAfter?: Promise<boolean>;
  /** A resync that came while that first sync ran: it runs again, with this reason, before releasing what it held. */
  again?: OutOfSyncReason;
  /** Settles when the subscription is first in sync; rejects if the listener closes first. */
  readonly ready: Promise<void>;
  private settle!: (error?: Error) => void;
  private readonly removal = new AbortController();

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

  /** Aborts once the subscription is removed: an out-of-sync handler waiting to be retried gives up at once. */
  get removed(): AbortSignal {
    return this.removal.signal;
  }

  /** Marks the subscription in sync and releases whoever waits for it. */
  markSynced(): void {
    this.synced = true;
    // Still holding: the notifications queued before it joined have yet to pass (see Channel.hold).
    this.receiving = this.active && !this.held;
    this.settle();
  }

  /** Deactivates the subscription; a pending `ready` resolves (or rejects with `error`). */
  deactivate(error?: Error): void {
    this.active = false;
    this.receiving = false;
    this.settle(error);
    this.removal.abort();
  }
}
