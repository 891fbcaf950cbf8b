import type { PglnBackoffOptions, PglnHealthCheckOptions, PglnLargePayloadsOptions, PglnModuleOptions, PglnResyncOptions, PglnTelemetryOptions } from './interfaces/index.js';
import { PglnOptionsError } from './errors/index.js';
import { checkConnection, checkPgTimers, resolveConnection, type ResolvedConnection } from './pgln.connection-options.js';
import { DEFAULT_CONNECTION } from './pgln.constants.js';
import { OPTIONS_INVALID } from './pgln.messages.js';
import { OptionChecks, defined, describe } from './pgln.option-checks.js';

export type { ResolvedConnection } from './pgln.connection-options.js';

/** Module options checked and completed with defaults. */
export interface ResolvedPglnOptions {
  /** How to reach PostgreSQL; absent without a connection (`nestjs-pgln/testing`'s in-memory bus). */
  readonly connection?: ResolvedConnection;
  readonly backoff: Required<PglnBackoffOptions>;
  readonly healthCheck: Required<PglnHealthCheckOptions>;
  readonly shutdownTimeoutMs: number;
  readonly startupTimeoutMs: number;
  readonly maxQueuedNotifications: number;
  readonly slowHandlerMs: number;
  readonly notifyTimeoutMs: number;
  readonly telemetry: Required<PglnTelemetryOptions>;
  readonly resync: { readonly concurrency?: number; readonly jitterMs: number; readonly holdMs: number };
  /** Where payloads over the limit go, with `largePayloads`. */
  readonly largePayloads?: Required<PglnLargePayloadsOptions>;
  /** `application_name` of the module's connections. */
  readonly applicationName: string;
}

const DEFAULTS = {
  applicationName: 'pgln',
  reconnect: { initialDelayMs: 100, maxDelayMs: 10_000 },
  healthCheck: { intervalMs: 10_000, timeoutMs: 5_000, queueUsageWarning: 0.5 },
  shutdownTimeoutMs: 10_000,
  startupTimeoutMs: 30_000,
  maxQueuedNotifications: 10_000,
  slowHandlerMs: 5_000,
  notifyTimeoutMs: 10_000,
  telemetry: { traces: true, metrics: true },
  resync: { jitterMs: 0, holdMs: 60_000 },
  largePayloads: { table: 'public.pgln_payloads', retentionMs: 600_000 },
} as const;

/** A lower-case SQL identifier, maybe schema-qualified: it goes into statements as it is. */
const TABLE_NAME = /^[a-z_][a-z0-9_]{0,62}(\.[a-z_][a-z0-9_]{0,62})?$/;

/**
 * Checks module options, reports every problem at once in a {@link PglnOptionsError}, and fills in
 * the defaults. Creates the pool when the options give a connection string or a `PoolConfig`.
 * Without `connection` (an in-memory transport), connection settings are neither required nor used.
 */
export function resolveOptions(
  given: PglnModuleOptions | undefined,
  name: string = DEFAULT_CONNECTION,
  { connection = true }: { connection?: boolean } = {},
): ResolvedPglnOptions {
  if (!given || typeof given !== 'object') {
    throw new PglnOptionsError(OPTIONS_INVALID(['options must be an object, e.g. { connectionString }']));
  }
  const options = defined(given);
  const defaultName = name === DEFAULT_CONNECTION ? DEFAULTS.applicationName : `${DEFAULTS.applicationName}-${name}`;
  const { applicationName = defaultName } = options;
  const backoff = { ...DEFAULTS.reconnect, ...defined(options.reconnect) };
  const healthCheck = { ...DEFAULTS.healthCheck, ...defined(options.healthCheck) };
  const shutdownTimeoutMs = options.shutdownTimeoutMs ?? DEFAULTS.shutdownTimeoutMs;
  const startupTimeoutMs = options.startupTimeoutMs ?? DEFAULTS.startupTimeoutMs;
  const maxQueuedNotifications = options.maxQueuedNotifications ?? DEFAULTS.maxQueuedNotifications;
  const slowHandlerMs = options.slowHandlerMs ?? DEFAULTS.slowHandlerMs;
  const notifyTimeoutMs = options.notifyTimeoutMs ?? DEFAULTS.notifyTimeoutMs;
  const telemetry = { ...DEFAULTS.telemetry, ...defined(options.telemetry) };
  const resync: { concurrency?: number; jitterMs: number; holdMs: number } = { ...DEFAULTS.resync, ...defined<PglnResyncOptions>(options.resync) };

  const largePayloads = options.largePayloads && { ...DEFAULTS.largePayloads, ...defined<PglnLargePayloadsOptions>(options.largePayloads) };

  const checks = new OptionChecks();
  if (connection) checkConnection(options, checks);
  checks.check(
    typeof applicationName === 'string' && applicationName.trim() !== '',
    `applicationName must be a non-empty string, got ${describe(applicationName)}`,
  );
  checks.duration('reconnect.initialDelayMs', backoff.initialDelayMs, 1, 'below it every delay rounds to 0, a retry loop without pause');
  checks.duration('reconnect.maxDelayMs', backoff.maxDelayMs);
  checks.check(
    !(backoff.maxDelayMs < backoff.initialDelayMs),
    `reconnect.maxDelayMs (${backoff.maxDelayMs}) must be at least reconnect.initialDelayMs (${backoff.initialDelayMs})`,
  );
  checks.duration('healthCheck.intervalMs', healthCheck.intervalMs);
  checks.duration('healthCheck.timeoutMs', healthCheck.timeoutMs);
  const { queueUsageWarning } = healthCheck;
  checks.check(
    typeof queueUsageWarning === 'number' && queueUsageWarning > 0 && queueUsageWarning <= 1,
    `healthCheck.queueUsageWarning must be a fraction > 0 and <= 1 (0.5 warns at half full), got ${describe(queueUsageWarning)}`,
  );
  checks.duration('startupTimeoutMs', startupTimeoutMs);
  checks.duration('slowHandlerMs', slowHandlerMs);
  checks.duration('notifyTimeoutMs', notifyTimeoutMs);
  checks.check(
    Number.isInteger(maxQueuedNotifications) && maxQueuedNotifications > 0,
    `maxQueuedNotifications must be a whole number > 0, got ${describe(maxQueuedNotifications)}`,
  );
  checks.duration('shutdownTimeoutMs', shutdownTimeoutMs, 0);
  checks.check(
    options.telemetry === undefined || (options.telemetry !== null && typeof options.telemetry === 'object'),
    `telemetry must be an object such as { traces: false }, got ${describe(options.telemetry)}`,
  );
  for (const signal of ['traces', 'metrics'] as const) {
    checks.check(typeof telemetry[signal] === 'boolean', `telemetry.${signal} must be true or false, got ${describe(telemetry[signal])}`);
  }
  checks.check(
    options.resync === undefined || (options.resync !== null && typeof options.resync === 'object'),
    `resync must be an object such as { concurrency: 4 }, got ${describe(options.resync)}`,
  );
  checks.check(
    resync.concurrency === undefined || (Number.isInteger(resync.concurrency) && resync.concurrency >= 1 && resync.concurrency <= 1_000),
    `resync.concurrency must be a whole number from 1 to 1000 (out-of-sync runs at once across the fleet), got ${describe(resync.concurrency)}`,
  );
  checks.duration('resync.jitterMs', resync.jitterMs, 0);
  checks.check(!(typeof resync.jitterMs === 'number' && !Number.isInteger(resync.jitterMs)), `resync.jitterMs must be a whole number of ms, got ${describe(resync.jitterMs)}`);
  checks.duration('resync.holdMs', resync.holdMs);
  checks.check(
    options.largePayloads === undefined || (options.largePayloads !== null && typeof options.largePayloads === 'object'),
    `largePayloads must be an object such as {} or { table: 'pgln_payloads' }, got ${describe(options.largePayloads)}`,
  );
  if (largePayloads) {
    checks.check(
      typeof largePayloads.table === 'string' && TABLE_NAME.test(largePayloads.table),
      `largePayloads.table must be a lower-case SQL name (letters, digits, _; at most 63 each), maybe schema-qualified, such as 'public.pgln_payloads' or 'app.payloads', got ${describe(largePayloads.table)}`,
    );
    const { retentionMs } = largePayloads;
    checks.check(
      typeof retentionMs === 'number' && retentionMs >= 1_000 && retentionMs <= 365 * 86_400_000,
      `largePayloads.retentionMs must be from 1000 (1 s: a receiver must have time to fetch the row) to 31536000000 (a year) ms, got ${describe(retentionMs)}`,
    );
  }
  if (connection) checkPgTimers(options, checks);
  checks.throwIfAny();

  return {
    connection: connection ? resolveConnection(options, { applicationName, connectTimeoutMs: healthCheck.timeoutMs, notifyTimeoutMs }) : undefined,
    backoff,
    healthCheck,
    shutdownTimeoutMs,
    startupTimeoutMs,
    maxQueuedNotifications,
    slowHandlerMs,
    notifyTimeoutMs,
    telemetry,
    resync,
    largePayloads: largePayloads || undefined,
    applicationName,
  };
}
