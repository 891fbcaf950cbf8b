import pg from 'pg';
import type { Pool, PoolConfig } from 'pg';
import { PglnOptionsError } from './errors/index.js';
import type { PglnHost, PglnTargetSessionAttrs } from './interfaces/index.js';
import { expand, selectorOf } from './pgln.connection-options.js';
import { chooseHosts, hostProblems, isMultiHost, splitConnectionString } from './pgln.hosts.js';
import { POOL_HOST_WITH_HOSTS, POOL_OPTIONS_INVALID } from './pgln.messages.js';

/** How long the search for a host may take per host (connecting, then the qualifying query) when `connectionTimeoutMillis` is not set. */
const DEFAULT_SEARCH_TIMEOUT_MS = 5_000;

/** A `pg.Pool`'s settings, whose connection string may list several hosts (see {@link createMultiHostPool}). */
export interface PglnPoolConfig extends PoolConfig {
  /**
   * Several servers, tried in order; replaces the host of `connectionString` (or `host`/`port`).
   * A libpq multi-host `connectionString` (`postgres://u:p@h1:5432,h2:5433/db`) gives them as well.
   * @default the hosts of `connectionString`, else its one host
   */
  hosts?: PglnHost[];
  /**
   * Which server the pool keeps, as libpq's `target_session_attrs` (also read from the connection string).
   * @default 'primary' with several hosts, else 'any'
   */
  targetSessionAttrs?: PglnTargetSessionAttrs;
}

/**
 * A `pg.Pool` over several hosts, as libpq does with a multi-host connection string and
 * `target_session_attrs` (node-postgres has no multi-host strings, brianc/node-postgres#1470):
 *
 * ```ts
 * const pool = createMultiHostPool({
 *   connectionString: 'postgres://app:secret@db1:5432,db2:5432,db3:5432/shop?target_session_attrs=primary',
 *   max: 5,
 * });
 * ```
 *
 * Invariant: the pool sends to one host at a time, and holds no connection to any other. That
 * host is found by trying the hosts in order (a host that refuses, does not answer within
 * `connectionTimeoutMillis`, 5 s if unset, or does not qualify, a standby for `'primary'`, is
 * skipped), with one connection of its own closed at once. It is kept until a connection there is
 * lost or fails with a FATAL (the next new connection searches again, from the first host) or a
 * statement there is refused as read-only (SQLSTATE 25006: every connection to it is closed too).
 * When the search finds another host, connections to the old one are closed: an idle one is
 * dropped with an `'error'` on the pool (listen for it, as with any pool), a checked-out one
 * rejects its queries, one still connecting fails. A failed query is never retried: the server
 * may have run it. Connecting is bounded as the search is (`connectionTimeoutMillis`, 5 s if
 * unset); after a search that found no host, new connections fail at once with its error for a
 * while (250 ms, doubling up to 5 s while searches keep failing) instead of searching each.
 *
 * Given to `PglnModule` as its `pool`, the LISTEN connection chooses among the same hosts with the
 * same `target_session_attrs` (unless the module options give `hosts`), and the pool then sends
 * where the LISTEN connection listens, as the module's own pool does: with two primaries at once (a
 * split brain), a notification sent to the other would never reach it. Give such a pool to one
 * module instance only: it follows one LISTEN connection, and chooses on its own again once that
 * module has closed.
 *
 * With one host (and no `target_session_attrs`), it is a plain `pg.Pool` of these settings.
 * Throws a {@link PglnOptionsError} for a host list or `target_session_attrs` it cannot honour.
 */
export function createMultiHostPool(config: PglnPoolConfig = {}): Pool {
  const { hosts, targetSessionAttrs, ...poolConfig } = config;
  const connectionString = poolConfig.connectionString;
  const problems = hostProblems({ hosts, targetSessionAttrs }, [connectionString]);
  const several = hosts !== undefined || (typeof connectionString === 'string' && isMultiHost(connectionString));
  if (several && (poolConfig.host !== undefined || poolConfig.port !== undefined)) problems.push(POOL_HOST_WITH_HOSTS());
  if (problems.length > 0) throw new PglnOptionsError(POOL_OPTIONS_INVALID(problems));

  // The first host stands for all (pg cannot parse a list), and target_session_attrs is not a server setting.
  const split = typeof connectionString === 'string' ? splitConnectionString(connectionString) : undefined;
  if (split) poolConfig.connectionString = split.single;
  const timeoutMs = poolConfig.connectionTimeoutMillis || DEFAULT_SEARCH_TIMEOUT_MS;
  // Discrete fields: pg lets a connection string win over the host and port each connection is given.
  const settings = expand(poolConfig);
  const selector = selectorOf(chooseHosts({ hosts, targetSessionAttrs }, split), settings, timeoutMs);
  if (!selector) return new pg.Pool(poolConfig);

  const probe = { ...settings, application_name: `${poolConfig.application_name ?? 'pgln-pool'}-probe`, connectionTimeoutMillis: timeoutMs };
  const Client = selector.poolClient((poolConfig as { Client?: typeof pg.Client }).Client ?? pg.Client, probe);
  const stopSearch = () => selector.stop();
  /** Ending the pool also stops a search in flight (its connection would keep `end()` waiting). */
  class MultiHostPool extends pg.Pool {
    override end(): Promise<void>;
    override end(callback: () => void): void;
    override end(callback?: () => void): Promise<void> | void {
      stopSearch();
      return callback ? super.end(callback) : super.end();
    }
  }
  return selector.tag(new MultiHostPool({ ...poolConfig, Client } as PoolConfig));
}
