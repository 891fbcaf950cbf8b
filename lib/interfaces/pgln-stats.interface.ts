import type { PglnState } from './pgln-state.interface.js';

/** A snapshot of the listener, as `PglnService.stats()` returns it. */
export interface PglnStats {
  /** The connection state. */
  readonly state: PglnState;
  /** When that state was entered. */
  readonly since: Date;
  /**
   * How full PostgreSQL's notification queue was at the last health check, 0 to 1
   * (`pg_notification_queue_usage()`); undefined before the first one.
   */
  readonly notificationQueueUsage?: number;
  /** When the last successful health check ran and how long its round trip took. */
  readonly lastHealthCheck?: { readonly at: Date; readonly roundTripMs: number };
}
