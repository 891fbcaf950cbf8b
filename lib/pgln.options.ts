import pg from 'pg';
import type { ClientConfig, Pool, PoolConfig } from 'pg';
import { parseIntoClientConfig } from 'pg-connection-string';
import type { PglnBackoffOptions, PglnModuleOptions } from './interfaces/index.js';
import { PglnOptionsError } from './errors/index.js';
import { OPTIONS_INVALID } from './pgln.messages.js';

/** Module options checked and completed with defaults. */
export interface ResolvedPglnOptions {
  /** The pool `notify` sends through. */
  readonly pool: Pool;
  /** Whether the module created `pool` (and so ends it at shutdown). */
  readonly ownsPool: boolean;
  /** Configuration of the dedicated LISTEN connection. */
  readonly listener: ClientConfig;
  readonly backoff: Required<PglnBackoffOptions>;
  readonly shutdownTimeoutMs: number;
  /** Where the listener connects, for logs: `user@host:port/database`, never a password. */
  readonly target: string;
}

export const DEFAULT_APPLICATION_NAME = 'pgln';
export const DEFAULT_BACKOFF: Required<PglnBackoffOptions> = { initialDelayMs: 100, maxDelayMs: 10_000 };
export const DEFAULT_SHUTDOWN_TIMEOUT_MS = 10_000;

function isPool(value: unknown): value is Pool {
  const pool = value as Partial<Pool> | null;
  return !!pool && typeof pool.query === 'function' && typeof pool.connect === 'function' && typeof pool.end === 'function';
}

function isPositiveNumber(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value) && value > 0;
}

function describe(value: unknown): string {
  return typeof value === 'string' ? JSON.stringify(value) : String(value);
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

/** Describes a connection target without its password: `user@host:port/database`. */
export function describeTarget(config: ClientConfig): string {
  const { host = 'localhost', port = 5432, user, database } = config;
  return `${user ? `${user}@` : ''}${host}:${port}/${database ?? user ?? ''}`;
}

/**
 * Checks module options, reports every problem at once in a {@link PglnOptionsError}, and fills in
 * the defaults. Creates the pool when the options give a connection string or a `PoolConfig`.
 */
export function resolveOptions(options: PglnModuleOptions | undefined): ResolvedPglnOptions {
  const problems: string[] = [];
  if (!options || typeof options !== 'object') {
    throw new PglnOptionsError(OPTIONS_INVALID(['options must be an object, e.g. { connectionString }']));
  }
  const { connectionString, pool, listener = {}, applicationName = DEFAULT_APPLICATION_NAME } = options;
  const backoff = { ...DEFAULT_BACKOFF, ...options.reconnect };
  const shutdownTimeoutMs = options.shutdownTimeoutMs ?? DEFAULT_SHUTDOWN_TIMEOUT_MS;

  if (connectionString !== undefined && (typeof connectionString !== 'string' || connectionString.trim() === '')) {
    problems.push('connectionString must be a non-empty string such as "postgres://user@host:5432/db"');
  }
  if (connectionString !== undefined && pool !== undefined) {
    problems.push(
      'give connection settings once: either connectionString, or pool (a pg.Pool, or a PoolConfig with its own connection settings)',
    );
  }
  if (connectionString === undefined && pool === undefined) {
    problems.push('no connection settings: give connectionString, or pool (a pg.Pool or a PoolConfig)');
  }
  if (pool !== undefined && (pool === null || typeof pool !== 'object')) {
    problems.push(`pool must be a pg.Pool or a PoolConfig object, got ${describe(pool)}`);
  }
  if (listener === null || typeof listener !== 'object') {
    problems.push(`listener must be a pg ClientConfig object, got ${describe(listener)}`);
  }
  if (typeof applicationName !== 'string' || applicationName.trim() === '') {
    problems.push(`applicationName must be a non-empty string, got ${describe(applicationName)}`);
  }
  if (!isPositiveNumber(backoff.initialDelayMs)) {
    problems.push(`reconnect.initialDelayMs must be a number > 0 (ms), got ${describe(backoff.initialDelayMs)}`);
  }
  if (!isPositiveNumber(backoff.maxDelayMs)) {
    problems.push(`reconnect.maxDelayMs must be a number > 0 (ms), got ${describe(backoff.maxDelayMs)}`);
  } else if (isPositiveNumber(backoff.initialDelayMs) && backoff.maxDelayMs < backoff.initialDelayMs) {
    problems.push(
      `reconnect.maxDelayMs (${backoff.maxDelayMs}) must be at least reconnect.initialDelayMs (${backoff.initialDelayMs})`,
    );
  }
  if (typeof shutdownTimeoutMs !== 'number' || !Number.isFinite(shutdownTimeoutMs) || shutdownTimeoutMs < 0) {
    problems.push(`shutdownTimeoutMs must be a number >= 0 (ms), got ${describe(shutdownTimeoutMs)}`);
  }
  if (problems.length > 0) throw new PglnOptionsError(OPTIONS_INVALID(problems));

  const userPool = isPool(pool) ? pool : undefined;
  const base: ClientConfig = userPool
    ? { ...(userPool as Pool & { options?: ClientConfig }).options }
    : pool
      ? { ...(pool as PoolConfig) }
      : { connectionString };
  let expanded: ClientConfig;
  try {
    expanded = expand(base);
  } catch (error) {
    // Never echo the string itself: it may hold a password.
    throw new PglnOptionsError(OPTIONS_INVALID([`connectionString cannot be parsed: ${(error as Error).message}`]));
  }
  const listenerConfig: ClientConfig = {
    ...expanded,
    keepAlive: true,
    ...listener,
    application_name: listener.application_name ?? `${applicationName}-listener`,
  };
  return {
    pool: userPool ?? new pg.Pool({ application_name: applicationName, ...base }),
    ownsPool: !userPool,
    listener: listenerConfig,
    backoff,
    shutdownTimeoutMs,
    target: describeTarget(listenerConfig),
  };
}
