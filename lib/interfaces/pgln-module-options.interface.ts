import type { ClientConfig, Pool, PoolConfig } from 'pg';

/** Reconnect and retry timing: exponential backoff with full jitter. */
export interface PglnBackoffOptions {
  /**
   * Cap of the second attempt's random delay, in ms; each further attempt doubles it up to
   * `maxDelayMs`. The first reconnect attempt after a loss is immediate.
   * @default 100
   */
  initialDelayMs?: number;
  /**
   * Largest delay between two attempts, in ms.
   * @default 10000
   */
  maxDelayMs?: number;
}

/** How out-of-sync handlers start after a reconnect, across a fleet of instances. */
export interface PglnResyncOptions {
  /**
   * At most this many out-of-sync runs at once across every instance with the same
   * `applicationName` and instance name on the database (PostgreSQL advisory locks, one per slot,
   * held while a run's handlers run, on one connection of each instance's own with the LISTEN
   * connection's settings): a restart then does not send the whole fleet's reloads to the primary
   * at the same moment. Notifications stay held while a run waits. Unset: no limit.
   * @default undefined
   */
  concurrency?: number;
  /**
   * After a reconnect, each run starts after a random delay of up to this many ms (whole), so that
   * instances that lost the server together do not all reload in the same instant.
   * @default 0
   */
  jitterMs?: number;
  /**
   * The longest a slot is held, in ms: past it the slot is given up (and that logged) while the
   * handler runs on, so that one that hangs cannot stall the fleet. A slot whose connection is lost
   * is given up at once.
   * @default 60000
   */
  holdMs?: number;
}

/**
 * Payloads over pg_notify's 7,999 bytes, through a table: written in the sending statement (so in
 * the sender's transaction) and fetched by receivers before delivery, in order. Below the limit
 * nothing changes on the wire.
 */
export interface PglnLargePayloadsOptions {
  /**
   * The table, created at bootstrap if missing (`CREATE TABLE IF NOT EXISTS`; the README gives the
   * DDL): a lower-case name, schema-qualified unless every connection that sends or receives has the
   * same `search_path` (an unqualified name is looked up by each). Every instance that sends or
   * receives large payloads on a channel must name the same table.
   * @default 'public.pgln_payloads'
   */
  table?: string;
  /**
   * How long a row is kept, in ms (1 s to a year). Rows older are deleted every half of it (at
   * least once a minute), by one instance at a time. An instance further behind finds the row
   * gone: the notification is reported (`PglnPayloadLostError`) and its channel reads again.
   * @default 600000 (10 minutes)
   */
  retentionMs?: number;
}

/** Liveness check of the LISTEN connection. */
export interface PglnHealthCheckOptions {
  /**
   * How often, in ms, the LISTEN session is asked for `pg_listening_channels()` and checked to
   * hold every wanted channel. A dead connection is noticed within `intervalMs + timeoutMs`.
   * @default 10000
   */
  intervalMs?: number;
  /**
   * How long, in ms, the health check, a LISTEN, an UNLISTEN or connecting may take before the
   * connection is declared dead and replaced (a half-open socket never answers at all).
   * @default 5000
   */
  timeoutMs?: number;
  /**
   * How full PostgreSQL's notification queue (`pg_notification_queue_usage()`, read by every health
   * check) may get, as a fraction from 0 to 1, before a warning is logged, once per crossing. At 1
   * every NOTIFY in the cluster fails. The last reading is in `PglnService.stats()`.
   * @default 0.5
   */
  queueUsageWarning?: number;
}

/**
 * OpenTelemetry signals. They are produced only when `@opentelemetry/api` is installed and an SDK
 * registered its providers before the application was created; otherwise nothing is done at all.
 */
export interface PglnTelemetryOptions {
  /**
   * A consumer span per handler call: `process <channel>` per notification and handler,
   * `resync <channel>` per out-of-sync run. Turn off for channels so busy that a span per
   * notification costs too much; the metrics stay.
   * @default true
   */
  traces?: boolean;
  /**
   * Counters, gauges and the handler and resync duration histograms.
   * @default true
   */
  metrics?: boolean;
}

/** One server of several (see {@link PglnModuleOptions.hosts}). */
export interface PglnHost {
  /** Host name or IP address. */
  host: string;
  /**
   * TCP port.
   * @default the connection settings' port (5432)
   */
  port?: number;
}

/**
 * Which server a connection keeps, as libpq's `target_session_attrs`: `'any'` the first that
 * answers, `'read-write'` the first that accepts writes, `'primary'` the first not in recovery.
 * (libpq's `read-only`, `standby` and `prefer-standby` are refused: LISTEN and NOTIFY fail on a standby.)
 */
export type PglnTargetSessionAttrs = 'any' | 'read-write' | 'primary';

/** The LISTEN connection's `pg` settings, and whether a spare connection waits beside it. */
export interface PglnListenerOptions extends ClientConfig {
  /**
   * Keep one more connection open, connected and authenticated but idle (the listener's
   * `application_name` with `-spare`, `pgln-listener-spare` by default, in `pg_stat_activity`): when the LISTEN connection is lost, LISTEN runs on it at once instead
   * of on a new connection, and a new spare opens in the background. Recovery after a killed
   * backend is then one round trip; the cost is one more connection per instance. It stands in only
   * for an immediate reconnect (the lost connection had been live for a second); sooner, the backoff
   * applies as without it. A spare is checked every `healthCheck.intervalMs`; one that fails when
   * used is given up for a new connection at once.
   * @default false
   */
  spare?: boolean;
}

/** Options of `PglnModule.forRoot()` (and the value `forRootAsync()` factories return). */
export interface PglnModuleOptions {
  /**
   * PostgreSQL connection string, used by the LISTEN connection and by the pool the module
   * creates. Give either this or `pool`.
   */
  connectionString?: string;
  /**
   * The pool `notify` sends through: a `pg.Pool` you own (the module never ends it; the
   * LISTEN connection reuses its connection settings), or a `PoolConfig` the module turns into
   * a pool of its own and ends at shutdown.
   * @default a pool created from `connectionString`
   */
  pool?: Pool | PoolConfig;
  /**
   * Several servers, tried in order (libpq's multi-host form, which node-postgres lacks; the
   * connection string may give it too: `postgres://user@h1:5432,h2:5433/db`). The LISTEN connection
   * keeps the first that answers and qualifies ({@link targetSessionAttrs}), starting over from the
   * first after a loss; the pool the module creates follows, each new connection going to the host
   * that last qualified. A `pg.Pool` of yours stays yours: only the LISTEN connection uses these.
   * @default the one host of `connectionString` or `pool`
   */
  hosts?: PglnHost[];
  /**
   * Which of several hosts a connection keeps (also `?target_session_attrs=` in the connection
   * string).
   * @default 'primary' with several hosts (LISTEN and NOTIFY are refused during recovery), else 'any'
   */
  targetSessionAttrs?: PglnTargetSessionAttrs;
  /**
   * Settings that override, for the LISTEN connection only, those taken from `connectionString`
   * or `pool` (e.g. to bypass a transaction-mode PgBouncer, which cannot hold LISTEN), and `spare`.
   * @default {}
   */
  listener?: PglnListenerOptions;
  /**
   * `application_name` of the module's connections, as seen in `pg_stat_activity`; the LISTEN
   * connection reports `<applicationName>-listener`.
   * @default 'pgln' (`'pgln-<name>'` for a named instance)
   */
  applicationName?: string;
  /**
   * Reconnect backoff of the LISTEN connection; also paces retries of failing out-of-sync handlers.
   * @default { initialDelayMs: 100, maxDelayMs: 10000 }
   */
  reconnect?: PglnBackoffOptions;
  /**
   * How long, in ms, `notify` waits for PostgreSQL to accept a notification before it rejects. A
   * connection that does not answer in time is not reused. A timeout means "unknown": the server
   * may have accepted it, so treat it as not sent.
   * @default 10000
   */
  notifyTimeoutMs?: number;
  /**
   * How long `app.close()` waits for running handlers before closing the connection anyway, in ms.
   * @default 10000
   */
  shutdownTimeoutMs?: number;
  /**
   * Liveness check of the LISTEN connection (besides TCP keepalive).
   * @default { intervalMs: 10000, timeoutMs: 5000, queueUsageWarning: 0.5 }
   */
  healthCheck?: PglnHealthCheckOptions;
  /**
   * How long, in ms, `app.init()` keeps retrying a server it cannot reach before it fails. Errors
   * that retrying cannot fix (wrong password, unknown database or user) fail it at once. Once the
   * application has started, every error is retried forever.
   * @default 30000
   */
  startupTimeoutMs?: number;
  /**
   * Most notifications one channel may hold or queue. Beyond it the channel's queue is dropped and
   * its out-of-sync handlers run (reason `'overflow'`); a channel without one reports the number
   * dropped to its handlers' error path. The only case where notifications are discarded.
   * @default 10000
   */
  maxQueuedNotifications?: number;
  /**
   * A handler (notification or out-of-sync) still running after this many ms is logged as slow,
   * with its name, channel and elapsed time. It is not cancelled. An async handler is noticed by a
   * watchdog that ticks every quarter of this: within 1.25 times it, and its time is that much short
   * (no clock is read per call).
   * @default 5000
   */
  slowHandlerMs?: number;
  /**
   * How out-of-sync runs start after a reconnect, across a fleet: a limit on how many run at once
   * (`concurrency`), a random delay (`jitterMs`).
   * @default {}
   */
  resync?: PglnResyncOptions;
  /**
   * Send payloads of any size: those over 7,999 bytes go through a table (see
   * {@link PglnLargePayloadsOptions}); `{}` for the defaults. Unset: such a payload is refused with
   * a `PglnPayloadError`, as PostgreSQL would refuse it.
   * @default undefined
   */
  largePayloads?: PglnLargePayloadsOptions;
  /**
   * Which OpenTelemetry signals to produce when an SDK is registered.
   * @default { traces: true, metrics: true }
   */
  telemetry?: PglnTelemetryOptions;
}
