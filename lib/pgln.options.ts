import pg from 'pg';
import type { ClientConfig, Pool, PoolConfig } from 'pg';
import { parseIntoClientConfig } from 'pg-connection-string';
import type { PglnBackoffOptions, PglnHealthCheckOptions, PglnModuleOptions, PglnTelemetryOptions } from './interfaces/index.js';
import { PglnOptionsError } from './errors/index.js';
import { DEFAULT_CONNECTION } from './pgln.constants.js';
import { OPTIONS_INVALID } from './pgln.messages.js';
import { OwnedPool } from './pgln.owned-pool.js';

/** Module options checked and completed with defaults. */
export interface ResolvedPglnOptions {
  /** The pool `notify` sends through. */
  readonly pool: Pool;
  /** The same pool when the module created it (and so ends it at shutdown); undefined for the application's own. */
  readonly owned?: OwnedPool;
  /** Configuration of the dedicated LISTEN connection. */
  readonly listener: ClientConfig;
  readonly backoff: Required<PglnBackoffOptions>;
  readonly healthCheck: Required<PglnHealthCheckOptions>;
  readonly shutdownTimeoutMs: number;
  readonly startupTimeoutMs: number;
  readonly maxQueuedNotifications: number;
  readonly slowHandlerMs: number;
  readonly notifyTimeoutMs: number;
  /** Where the listener connects, for logs: `user@host:port/database`, never a password. */
  readonly target: string;
  readonly telemetry: Required<PglnTelemetryOptions>;
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
  /** TCP keepalive of the LISTEN connection: first probe after this much idle time. */
  keepAliveInitialDelayMs: 10_000,
} as const;

/** The longest delay a Node.js timer honours (2^31 - 1 ms); a longer one fires after 1 ms. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Whether `value` can open connections and query: a pg.Pool, or a pg.Client (which is no pool). */
function isQueryable(value: unknown): value is Pool {
  const pool = value as Partial<Pool> | null;
  return !!pool && typeof pool.query === 'function' && typeof pool.connect === 'function' && typeof pool.end === 'function';
}

/** A pg.Pool (of any copy of pg): it counts its connections, which a pg.Client does not. */
function isPool(value: unknown): value is Pool {
  return isQueryable(value) && typeof (value as Partial<Pool>).totalCount === 'number';
}

/**
 * `value` without its keys whose value is `undefined`: an option given as `undefined` (a config
 * value that is not set, say) takes its default, as if it were not given. Spread over the
 * defaults, it would replace them with `undefined`, which pg reads as "no timeout".
 */
function defined<T extends object>(value: T | undefined): T {
  if (!value || typeof value !== 'object' || isQueryable(value)) return value as T;
  return Object.fromEntries(Object.entries(value).filter(([, entry]) => entry !== undefined)) as T;
}

function describe(value: unknown): string {
  return typeof value === 'string' ? JSON.stringify(value) : String(value);
}

/** Names what was given where connection settings belong, never echoing a string: it may be a URL with a password. */
function describeSettings(value: unknown): string {
  return typeof value === 'string' ? 'a string (give a connection string as connectionString)' : String(value);
}

/**
 * Connection settings as discrete fields: pg lets a connection string win over host, port and
 * the rest, so it is expanded here for `listener` overrides to take effect.
 */
function expand(config: ClientConfig): ClientConfig {
  if (!config.connectionString) return config;
  const { connectionString, ...rest } = config;
  const parsed = Object.entries(parseIntoClientConfig(connectionString)).filter(([, value]) => value != null);
  return { ...rest, ...Object.fromEntries(parsed) };
}

/** A connection setting as pg resolves it: the config, then the `PG*` environment variable, then pg's default. */
function setting(config: ClientConfig, key: 'host' | 'port' | 'user' | 'database'): string | number | undefined {
  return config[key] || process.env[`PG${key.toUpperCase()}`] || pg.defaults[key] || undefined;
}

/** Describes a connection target without its password, as pg will resolve it: `user@host:port/database`. */
function describeTarget(config: ClientConfig): string {
  const user = setting(config, 'user');
  return `${user ? `${user}@` : ''}${setting(config, 'host')}:${setting(config, 'port')}/${setting(config, 'database') ?? user ?? ''}`;
}

/**
 * Checks module options, reports every problem at once in a {@link PglnOptionsError}, and fills in
 * the defaults. Creates the pool when the options give a connection string or a `PoolConfig`.
 */
export function resolveOptions(given: PglnModuleOptions | undefined, name: string = DEFAULT_CONNECTION): ResolvedPglnOptions {
  if (!given || typeof given !== 'object') {
    throw new PglnOptionsError(OPTIONS_INVALID(['options must be an object, e.g. { connectionString }']));
  }
  const options = defined(given);
  const defaultName = name === DEFAULT_CONNECTION ? DEFAULTS.applicationName : `${DEFAULTS.applicationName}-${name}`;
  const { connectionString, applicationName = defaultName } = options;
  const pool = defined(options.pool);
  const listener = options.listener === undefined ? {} : defined(options.listener);
  const backoff = { ...DEFAULTS.reconnect, ...defined(options.reconnect) };
  const healthCheck = { ...DEFAULTS.healthCheck, ...defined(options.healthCheck) };
  const shutdownTimeoutMs = options.shutdownTimeoutMs ?? DEFAULTS.shutdownTimeoutMs;
  const startupTimeoutMs = options.startupTimeoutMs ?? DEFAULTS.startupTimeoutMs;
  const maxQueuedNotifications = options.maxQueuedNotifications ?? DEFAULTS.maxQueuedNotifications;
  const slowHandlerMs = options.slowHandlerMs ?? DEFAULTS.slowHandlerMs;
  const notifyTimeoutMs = options.notifyTimeoutMs ?? DEFAULTS.notifyTimeoutMs;
  const telemetry = { ...DEFAULTS.telemetry, ...defined(options.telemetry) };

  const problems: string[] = [];
  const check = (ok: boolean, problem: string) => void (ok || problems.push(problem));
  /** A time in ms: a whole timer's worth (>= 1, or >= 0 where 0 turns it off), and one Node.js can wait. */
  const duration = (name: string, value: unknown, min: 0 | 1 = 1, belowOne = 'timers count whole milliseconds') => {
    const ok = typeof value === 'number' && (min === 0 ? value >= 0 : value > 0);
    check(ok, `${name} must be a number ${min === 0 ? '>= 0' : '> 0'} (ms), got ${describe(value)}`);
    check(!ok || min === 0 || (value as number) >= 1, `${name} must be at least 1 (ms), got ${describe(value)}: ${belowOne}`);
    // Node.js runs a timer of a longer delay after 1 ms.
    check(!ok || (value as number) <= MAX_TIMER_MS, `${name} must be at most ${MAX_TIMER_MS} ms (about 24.8 days, the longest timer Node.js keeps), got ${describe(value)}`);
  };

  check(
    connectionString === undefined || (typeof connectionString === 'string' && connectionString.trim() !== ''),
    'connectionString must be a non-empty string such as "postgres://user@host:5432/db"',
  );
  check(
    connectionString === undefined || pool === undefined,
    'give connection settings once: either connectionString, or pool (a pg.Pool, or a PoolConfig with its own connection settings)',
  );
  check(
    connectionString !== undefined || pool !== undefined,
    'no connection settings: give connectionString, or pool (a pg.Pool or a PoolConfig)',
  );
  check(
    pool === undefined || (pool !== null && typeof pool === 'object'),
    `pool must be a pg.Pool or a PoolConfig object, got ${describeSettings(pool)}`,
  );
  check(
    !isQueryable(pool) || isPool(pool),
    'pool must be a pg.Pool or a PoolConfig object, got a pg.Client: one connection cannot send notifications ' +
      'side by side and is never replaced once it fails. Give a pg.Pool, or a PoolConfig for the module to create one.',
  );
  check(
    listener !== null && typeof listener === 'object',
    `listener must be a pg ClientConfig object, got ${describeSettings(listener)}`,
  );
  check(
    typeof applicationName === 'string' && applicationName.trim() !== '',
    `applicationName must be a non-empty string, got ${describe(applicationName)}`,
  );
  duration('reconnect.initialDelayMs', backoff.initialDelayMs, 1, 'below it every delay rounds to 0, a retry loop without pause');
  duration('reconnect.maxDelayMs', backoff.maxDelayMs);
  check(
    !(backoff.maxDelayMs < backoff.initialDelayMs),
    `reconnect.maxDelayMs (${backoff.maxDelayMs}) must be at least reconnect.initialDelayMs (${backoff.initialDelayMs})`,
  );
  duration('healthCheck.intervalMs', healthCheck.intervalMs);
  duration('healthCheck.timeoutMs', healthCheck.timeoutMs);
  const { queueUsageWarning } = healthCheck;
  check(
    typeof queueUsageWarning === 'number' && queueUsageWarning > 0 && queueUsageWarning <= 1,
    `healthCheck.queueUsageWarning must be a fraction > 0 and <= 1 (0.5 warns at half full), got ${describe(queueUsageWarning)}`,
  );
  duration('startupTimeoutMs', startupTimeoutMs);
  duration('slowHandlerMs', slowHandlerMs);
  duration('notifyTimeoutMs', notifyTimeoutMs);
  check(
    Number.isInteger(maxQueuedNotifications) && maxQueuedNotifications > 0,
    `maxQueuedNotifications must be a whole number > 0, got ${describe(maxQueuedNotifications)}`,
  );
  duration('shutdownTimeoutMs', shutdownTimeoutMs, 0);
  check(
    options.telemetry === undefined || (options.telemetry !== null && typeof options.telemetry === 'object'),
    `telemetry must be an object such as { traces: false }, got ${describe(options.telemetry)}`,
  );
  for (const signal of ['traces', 'metrics'] as const) {
    check(typeof telemetry[signal] === 'boolean', `telemetry.${signal} must be true or false, got ${describe(telemetry[signal])}`);
  }
  // pg's own timers, in the settings the module passes on: 0 turns them off, except the connect
  // timeouts of the LISTEN connection (it bounds a reconnect to a half-open server) and of the
  // module's pool (a connection attempt without one may never end, and ending the pool waits for it).
  const pgTimers: [string, unknown, string[]][] = [
    ['listener', listener, ['connectionTimeoutMillis', 'query_timeout']],
    ['pool', isQueryable(pool) ? undefined : pool, ['connectionTimeoutMillis', 'idleTimeoutMillis', 'query_timeout']],
  ];
  for (const [where, config, keys] of pgTimers) {
    if (!config || typeof config !== 'object') continue;
    for (const key of keys) {
      const value = (config as Record<string, unknown>)[key];
      if (value === undefined) continue;
      if (key === 'connectionTimeoutMillis' && value === 0) {
        check(false, `${where}.connectionTimeoutMillis must be a number > 0 (ms), got 0: 0 means no limit, and a connection attempt to a server that does not answer would then never end`);
      } else duration(`${where}.${key}`, value, key === 'connectionTimeoutMillis' ? 1 : 0);
    }
  }
  if (problems.length > 0) throw new PglnOptionsError(OPTIONS_INVALID(problems));

  const userPool = isQueryable(pool) ? pool : undefined;
  const base: ClientConfig = userPool
    ? { ...(userPool as Pool & { options?: ClientConfig }).options }
    : pool
      ? { ...(pool as PoolConfig) }
      : { connectionString };
  let listenerConfig: ClientConfig;
  try {
    listenerConfig = {
      ...expand(base),
      keepAlive: true,
      keepAliveInitialDelayMillis: DEFAULTS.keepAliveInitialDelayMs,
      connectionTimeoutMillis: healthCheck.timeoutMs,
      ...expand(listener),
    };
  } catch (error) {
    // Never echo the string itself: it may hold a password.
    throw new PglnOptionsError(OPTIONS_INVALID([`connectionString cannot be parsed: ${(error as Error).message}`]));
  }
  listenerConfig.application_name = listener.application_name ?? `${applicationName}-listener`;
  // Its connect timeout is notify's: the pool stops trying when notify stops waiting.
  const owned = userPool ? undefined : new OwnedPool({ application_name: applicationName, connectionTimeoutMillis: notifyTimeoutMs, ...base });
  return {
    pool: userPool ?? owned!.pool,
    owned,
    listener: listenerConfig,
    backoff,
    healthCheck,
    shutdownTimeoutMs,
    startupTimeoutMs,
    maxQueuedNotifications,
    slowHandlerMs,
    notifyTimeoutMs,
    target: describeTarget(listenerConfig),
    telemetry,
  };
}
