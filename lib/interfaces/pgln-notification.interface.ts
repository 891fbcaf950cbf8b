/** A notification as PostgreSQL delivered it. */
export interface PglnNotification {
  /** The channel it was sent on, exactly as given to NOTIFY / pg_notify. */
  readonly channel: string;
  /** The raw payload text (empty string when none was sent). */
  readonly payload: string;
  /** PID of the backend that sent it (compare with `pg_backend_pid()` to skip your own). */
  readonly processId: number;
}

/**
 * Why out-of-sync handlers run:
 * - `'connect'`: the first connection at application bootstrap;
 * - `'reconnect'`: the LISTEN connection was lost and is back, so notifications may have been missed;
 * - `'listen'`: a handler registered at runtime through `PglnService.listen()` starts listening;
 * - `'overflow'`: more than `maxQueuedNotifications` were waiting on the channel, so they were dropped;
 * - `'manual'`: `PglnService.resync()` asked for it.
 */
export type OutOfSyncReason = 'connect' | 'reconnect' | 'listen' | 'overflow' | 'manual';

/** Passed to out-of-sync handlers. */
export interface OutOfSyncEvent {
  /** The channel whose state must be rebuilt. */
  readonly channel: string;
  /** Why the handler runs now. */
  readonly reason: OutOfSyncReason;
}
