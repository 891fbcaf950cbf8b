import type { OutOfSyncReason } from './pgln-notification.interface.js';
import type { PglnState } from './pgln-state.interface.js';

/**
 * What happened to notifications and resyncs, counted since the instance started (for one
 * channel: since it was last listened on). The same figures the OpenTelemetry metrics report.
 */
export interface PglnCounts {
  /** Notifications that arrived. */
  readonly received: number;
  /** Notification handler calls that completed: a notification counts once per handler. */
  readonly delivered: number;
  /** Handler calls that threw or rejected: notification handlers, and each failed out-of-sync attempt. */
  readonly handlerFailures: number;
  /** Payloads a handler did not get because they were not JSON or failed the channel's schema (once per handler). */
  readonly invalidPayloads: number;
  /**
   * Notifications dropped because a subscriber's queue grew past `maxQueuedNotifications`, counted
   * per subscriber (a provider, or a `listen()`): each queues a copy of its own, so one notification
   * dropped from two queues counts twice.
   */
  readonly dropped: number;
  /**
   * Notifications of exactly-once channels a subscriber skipped because its reload's snapshot saw
   * their transaction (see `OutOfSyncEvent.snapshot`), counted per subscriber.
   */
  readonly skippedBySnapshot: number;
  /**
   * Notifications of exactly-once channels that came without their sender's transaction id (a
   * foreign sender): delivered as on any channel, never skipped. Counted per handler.
   */
  readonly withoutTransactionId: number;
  /** Out-of-sync handler runs that completed, by reason. */
  readonly resyncs: Readonly<Record<OutOfSyncReason, number>>;
}

/** One listened channel in {@link PglnStats}. */
export interface PglnChannelStats extends PglnCounts {
  /** Its subscribers: each provider with handlers on it counts once, and each `listen()` call. */
  readonly subscriptions: number;
  /**
   * Notifications waiting, counted per subscriber as {@link PglnCounts.dropped} is: queued behind its
   * running handler, or held while its out-of-sync handler runs.
   */
  readonly queued: number;
  /**
   * False while one of its subscribers has an out-of-sync run due or running (after a reconnect,
   * an overflow, `resync()`, or a first sync), its notifications held meanwhile.
   */
  readonly inSync: boolean;
  /** The last out-of-sync handler run that completed. */
  readonly lastResync?: {
    readonly handler: string;
    readonly reason: OutOfSyncReason;
    readonly at: Date;
    readonly durationMs: number;
  };
}

/** A snapshot of one instance, as `PglnService.stats()` returns it. Totals include channels no longer listened on. */
export interface PglnStats extends PglnCounts {
  /** The instance's name (`'default'` unless `PglnModule.forRoot({ name })` gave one). */
  readonly name: string;
  /** The connection state. */
  readonly state: PglnState;
  /** When that state was entered. */
  readonly since: Date;
  /**
   * When the listener was last live, or started if it never was: undefined while live. Unlike
   * {@link since}, a listener that goes from reconnecting to syncing and back without ever being
   * live keeps it.
   */
  readonly notLiveSince?: Date;
  /** Times the LISTEN connection came back (LISTEN ran again) after it was lost. */
  readonly reconnects: number;
  /** Out-of-sync runs waiting now for one of the fleet's resync slots (`resync.concurrency`). */
  readonly waitingForResyncSlot: number;
  /** Notifications waiting on all channels (see {@link PglnChannelStats.queued}). */
  readonly queued: number;
  /**
   * How full PostgreSQL's notification queue was at the last health check, 0 to 1
   * (`pg_notification_queue_usage()`); undefined before the first one.
   */
  readonly notificationQueueUsage?: number;
  /** When the last successful health check ran and how long its round trip took. */
  readonly lastHealthCheck?: { readonly at: Date; readonly roundTripMs: number };
  /** Every channel listened on now, by name. */
  readonly channels: Readonly<Record<string, PglnChannelStats>>;
}
