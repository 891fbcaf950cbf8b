import pg from 'pg';
import type { ClientConfig, Pool, PoolConfig } from 'pg';
import { parseIntoClientConfig } from 'pg-connection-string';
import { PglnOptionsError } from './errors/index.js';
import type { PglnHost, PglnListenerOptions, PglnModuleOptions } from './interfaces/index.js';
import { HostSelector } from './pgln.host-selector.js';
import { chooseHosts, describeHost, hostProblems, isMultiHost, splitConnectionString, type HostChoice } from './pgln.hosts.js';
import { LISTENER_HOST_WITH_HOSTS, OPTIONS_INVALID } from './pgln.messages.js';
import { defined, describe, type OptionChecks } from './pgln.option-checks.js';
import { OwnedPool } from './pgln.owned-pool.js';

/** How an instance reaches PostgreSQL: the pool it notifies through and the LISTEN connection's settings. */
export interface ResolvedConnection {
  /** The pool `notify` sends through. */
  readonly pool: Pool;
  /** The same pool when the module created it (and so ends it at shutdown); undefined for the application's own. */
  readonly owned?: OwnedPool;
  /** Configuration of the dedicated LISTEN connection. */
  readonly listener: ClientConfig;
  /** Where the listener connects, for logs: `user@host:port/database`, never a password. */
  readonly target: string;
  /** Which of several hosts the LISTEN connection keeps; none for one plain host. */
  readonly hosts?: HostSelector;
  /**
   * Which of several hosts the pool connects to (often the listener's selector): the module's own
   * pool's, or that of a pool of yours made by `createMultiHostPool`; none for one plain host.
   */
  readonly poolHosts?: HostSelector;
  /** Keep a spare LISTEN connection (`listener.spare`). */
  readonly spare: boolean;
}

/** TCP keepalive of the LISTEN connection: first probe after this much idle time. */
const KEEP_ALIVE_INITIAL_DELAY_MS = 10_000;

/** Whether `value` can open connections and query: a pg.Pool, or a pg.Client (which is no pool). */
function isQueryable(value: unknown): value is Pool {
  const pool = value as Partial<Pool> | null;
  return !!pool && typeof pool.query === 'function' && typeof pool.connect === 'function' && typeof pool.end === 'function';
}

/** A pg.Pool (of any copy of pg): it counts its connections, which a pg.Client does not. */
function isPool(value: unknown): value is Pool {
  return isQueryable(value) && typeof (value as Partial<Pool>).totalCount === 'number';
}

/** Names what was given where connection settings belong, never echoing a string: it may be a URL with a password. */
function describeSettings(value: unknown): string {
  return typeof value === 'string' ? 'a string (give a connection string as connectionString)' : String(value);
}

/** The connection settings of `options`, undefined keys dropped. */
function settingsOf(options: PglnModuleOptions) {
  return {
    connectionString: options.connectionString,
    pool: defined(options.pool),
    listener: options.listener === undefined ? {} : defined(options.listener),
  };
}

/** Checks the connection settings: given once, of the right kinds, with pg timers that bound what they must. */
export function checkConnection(options: PglnModuleOptions, checks: OptionChecks): void {
  const { connectionString, pool, listener } = settingsOf(options);
  checks.check(
    connectionString === undefined || (typeof connectionString === 'string' && connectionString.trim() !== ''),
    'connectionString must be a non-empty string such as "postgres://user@host:5432/db"',
  );
  checks.check(
    connectionString === undefined || pool === undefined,
    'give connection settings once: either connectionString, or pool (a pg.Pool, or a PoolConfig with its own connection settings)',
  );
  checks.check(connectionString !== undefined || pool !== undefined, 'no connection settings: give connectionString, or pool (a pg.Pool or a PoolConfig)');
  checks.check(pool === undefined || (pool !== null && typeof pool === 'object'), `pool must be a pg.Pool or a PoolConfig object, got ${describeSettings(pool)}`);
  checks.check(
    !isQueryable(pool) || isPool(pool),
    'pool must be a pg.Pool or a PoolConfig object, got a pg.Client: one connection cannot send notifications ' +
      'side by side and is never replaced once it fails. Give a pg.Pool, or a PoolConfig for the module to create one.',
  );
  checks.check(listener !== null && typeof listener === 'object', `listener must be a pg ClientConfig object, got ${describeSettings(listener)}`);
  const spare = (listener as PglnListenerOptions | null)?.spare;
  checks.check(spare === undefined || typeof spare === 'boolean', `listener.spare must be true or false, got ${describe(spare)}`);
  // A pool of yours keeps its own connection string: it is not taken apart. One of createMultiHostPool brings its hosts.
  const baseString = isQueryable(pool) ? undefined : (connectionString ?? (pool as PoolConfig | undefined)?.connectionString);
  const poolHosts = isQueryable(pool) ? HostSelector.of(pool)?.hosts : undefined;
  const listenerString = (listener as ClientConfig | null)?.connectionString;
  const hostOptions = { hosts: options.hosts ?? (poolHosts && poolHosts.length > 1 ? poolHosts : undefined), targetSessionAttrs: options.targetSessionAttrs };
  for (const problem of hostProblems(hostOptions, [baseString, listenerString])) checks.check(false, problem);
  const severalShared = hostOptions.hosts !== undefined || (typeof baseString === 'string' && isMultiHost(baseString));
  const { host, port } = (listener ?? {}) as ClientConfig;
  checks.check(!severalShared || (host === undefined && port === undefined), LISTENER_HOST_WITH_HOSTS());
}

/**
 * Checks pg's own timers in the settings the module passes on: 0 turns them off, except the connect
 * timeouts of the LISTEN connection (it bounds a reconnect to a half-open server) and of the
 * module's pool (a connection attempt without one may never end, and ending the pool waits for it).
 */
export function checkPgTimers(options: PglnModuleOptions, checks: OptionChecks): void {
  const { pool, listener } = settingsOf(options);
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
        checks.check(false, `${where}.connectionTimeoutMillis must be a number > 0 (ms), got 0: 0 means no limit, and a connection attempt to a server that does not answer would then never end`);
      } else checks.duration(`${where}.${key}`, value, key === 'connectionTimeoutMillis' ? 1 : 0);
    }
  }
}

/**
 * Connection settings as discrete fields: pg lets a connection string win over host, port and
 * the rest, so it is expanded here for `listener` overrides to take effect.
 */
export function expand(config: ClientConfig): ClientConfig {
  if (!config.connectionString) return config;
  const { connectionString, ...rest } = config;
  const parsed = Object.entries(parseIntoClientConfig(connectionString)).filter(([, value]) => value != null);
  return { ...rest, ...Object.fromEntries(parsed) };
}

/** A connection setting as pg resolves it: the config, then the `PG*` environment variable, then pg's default. */
function setting(config: ClientConfig, key: 'host' | 'port' | 'user' | 'database'): string | number | undefined {
  return config[key] || process.env[`PG${key.toUpperCase()}`] || pg.defaults[key] || undefined;
}

/**
 * Describes a connection target without its password, as pg will resolve it:
 * `user@host:port/database`, or `user@h1:5432,h2:5433/database` for several hosts.
 */
function describeTarget(config: ClientConfig, hosts?: readonly PglnHost[]): string {
  const user = setting(config, 'user');
  const port = setting(config, 'port');
  const where = hosts && hosts.length > 1 ? hosts.map((host) => describeHost({ port: Number(port), ...host })).join(',') : `${setting(config, 'host')}:${port}`;
  return `${user ? `${user}@` : ''}${where}/${setting(config, 'database') ?? user ?? ''}`;
}

/**
 * The connection of checked options: the LISTEN connection's settings (those of the pool or the
 * connection string, TCP keepalive, a connect timeout of `connectTimeoutMs`, then `listener`'s),
 * and the pool, created when the options give a connection string or a `PoolConfig`.
 */
export function resolveConnection(
  options: PglnModuleOptions,
  { applicationName, connectTimeoutMs, notifyTimeoutMs }: { applicationName: string; connectTimeoutMs: number; notifyTimeoutMs: number },
): ResolvedConnection {
  const { connectionString, pool, listener } = settingsOf(options);
  const userPool = isQueryable(pool) ? pool : undefined;
  const base: ClientConfig = userPool
    ? { ...(userPool as Pool & { options?: ClientConfig }).options }
    : pool
      ? { ...(pool as PoolConfig) }
      : { connectionString };
  // A multi-host string, which pg cannot parse, is reduced to its first host; the hosts are chosen from apart.
  // (A pool of yours keeps its own string.)
  const baseSplit = !userPool && typeof base.connectionString === 'string' ? splitConnectionString(base.connectionString) : undefined;
  if (baseSplit) base.connectionString = baseSplit.single;
  const { spare = false, ...listenerPg } = listener as PglnListenerOptions;
  const listenerSplit = typeof listenerPg.connectionString === 'string' ? splitConnectionString(listenerPg.connectionString) : undefined;
  const listenerSettings = listenerSplit ? { ...listenerPg, connectionString: listenerSplit.single } : listenerPg;
  let listenerConfig: ClientConfig;
  let poolConfig: ClientConfig;
  try {
    poolConfig = expand(base);
    listenerConfig = {
      ...poolConfig,
      keepAlive: true,
      keepAliveInitialDelayMillis: KEEP_ALIVE_INITIAL_DELAY_MS,
      connectionTimeoutMillis: connectTimeoutMs,
      ...expand(listenerSettings),
    };
  } catch (error) {
    // Never echo the string itself: it may hold a password.
    throw new PglnOptionsError(OPTIONS_INVALID([`connectionString cannot be parsed: ${(error as Error).message}`]));
  }
  listenerConfig.application_name = listener.application_name ?? `${applicationName}-listener`;

  // The listener's own host settings replace the shared ones; otherwise the listener and the pool share one selector:
  // the module's own pool's, or that of a pool of yours made by createMultiHostPool (unless the options name hosts).
  const listenerOwnHost = listener.connectionString !== undefined || listener.host !== undefined || listener.port !== undefined;
  const hostOptions = { hosts: options.hosts, targetSessionAttrs: options.targetSessionAttrs };
  const tagged = userPool ? HostSelector.of(userPool) : undefined;
  const shared =
    tagged && options.hosts === undefined
      ? (options.targetSessionAttrs ?? tagged.attrs) === tagged.attrs
        ? tagged
        : selectorOf({ hosts: tagged.hosts, attrs: options.targetSessionAttrs! }, poolConfig, connectTimeoutMs)
      : selectorOf(chooseHosts(hostOptions, baseSplit), poolConfig, connectTimeoutMs);
  const hosts = listenerOwnHost
    ? selectorOf(chooseHosts({ targetSessionAttrs: options.targetSessionAttrs }, listenerSplit), listenerConfig, connectTimeoutMs)
    : shared;
  // Its connect timeout is notify's: the pool stops trying when notify stops waiting.
  const ownPool: PoolConfig = { application_name: applicationName, connectionTimeoutMillis: notifyTimeoutMs, ...base };
  const poolHosts = userPool ? tagged : shared;
  if (poolHosts && !userPool) {
    // Searching is bounded like the listener's connecting, not by notify's whole budget.
    const probe = { ...poolConfig, application_name: `${ownPool.application_name}-probe`, connectionTimeoutMillis: connectTimeoutMs };
    ownPool.Client = poolHosts.poolClient(pg.Client, probe);
  }
  const owned = userPool ? undefined : new OwnedPool(ownPool);
  return { pool: userPool ?? owned!.pool, owned, listener: listenerConfig, hosts, poolHosts, spare, target: describeTarget(listenerConfig, hosts?.hosts) };
}

/** A selector for a choice of hosts (the one host of `config` when the choice names none), or none when there is no choice. */
export function selectorOf(choice: HostChoice | undefined, config: ClientConfig, timeoutMs: number): HostSelector | undefined {
  if (!choice) return undefined;
  const port = setting(config, 'port');
  const hosts = choice.hosts.length > 0 ? choice.hosts : [{ host: String(setting(config, 'host')), ...(port === undefined ? {} : { port: Number(port) }) }];
  return new HostSelector(hosts, choice.attrs, timeoutMs);
}
