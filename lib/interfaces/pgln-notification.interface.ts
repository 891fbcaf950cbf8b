import type { PglnExecutor } from './pgln-notify.interface.js';

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
  /**
   * Records the snapshot of the transaction the reload reads in (`pg_current_snapshot()`, read
   * through `executor`): from then on, this provider's (or this `listen()`'s) handlers skip every
   * notification of an exactly-once channel whose sending transaction that snapshot saw, since the
   * reload applied it already (`stats()` counts them as `skippedBySnapshot`). Call it inside the
   * reload's transaction, which must be REPEATABLE READ (one snapshot for all its reads), or be a
   * single statement. `executor` is anything `notify` accepts that returns rows: a pg client, a
   * TypeORM `EntityManager` or `QueryRunner`, `(text, values) => tx.$queryRawUnsafe(text, ...values)`
   * for Prisma, a Kysely or Drizzle executor. Without it nothing is skipped. Only the successful
   * attempt's snapshot counts.
   *
   * @throws PglnError when the executor's answer holds no snapshot
   */
  readonly snapshot: (executor: PglnExecutor) => Promise<void>;
}
