import pg from 'pg';
import type { Client, ClientConfig } from 'pg';
import { PglnConnectionError, PglnTimeoutError } from './errors/index.js';
import type { PglnHost, PglnTargetSessionAttrs } from './interfaces/index.js';
import { destroyConnection, keepsConnection } from './pgln.connection.js';
import { describeError, isFatalAtStartup } from './pgln.connection-errors.js';
import { Backoff } from './pgln.backoff.js';
import { describeHost } from './pgln.hosts.js';
import { HOST_NOT_QUALIFIED, NO_HOST_QUALIFIES, NO_ANSWER, POOL_CONNECTION_RETIRED, POOL_MOVED_WHILE_CONNECTING } from './pgln.messages.js';
import { withTimeout } from './pgln.promises.js';

const noop = () => undefined;

/**
 * After searches of the pool's that found no host: how long before the next may begin, 250 ms
 * doubling up to 5 s. No jitter (the wait is the cap): the pool's own connections share one search.
 */
const searchBackoff = new Backoff({ initialDelayMs: 250, maxDelayMs: 5_000 }, () => 1);

/** SQLSTATE 25006, read_only_sql_transaction: what a standby (or a read-only default) says to a NOTIFY. */
export function isReadOnly(error: unknown): boolean {
  return (error as { code?: unknown } | undefined)?.code === '25006';
}

/** Whether `client` is connected to `host` (a host without a port matches any port). */
function isOn(client: { host?: string; port?: number }, host: PglnHost): boolean {
  return client.host === host.host && (host.port === undefined || client.port === host.port);
}

/** Where a pool made by {@link createMultiHostPool} carries its selector (shared by every copy of the module). */
const POOL_HOSTS = Symbol.for('nestjs-pgln.pool-hosts');

/** pg's internals a pooled connection is watched and closed through. */
interface Internals {
  _connecting?: boolean;
  _ending?: boolean;
  connection: { on(event: 'errorMessage', listener: (message: unknown) => void): void; emit(event: 'error', error: Error): boolean };
}

/** Why a connected host does not qualify for `attrs`, or undefined when it does. */
async function disqualification(client: Client, attrs: PglnTargetSessionAttrs): Promise<string | undefined> {
  if (attrs === 'any') return undefined;
  const { rows } = await client.query<{ recovery: boolean; read_only: string }>(
    "SELECT pg_is_in_recovery() AS recovery, current_setting('transaction_read_only') AS read_only",
  );
  const { recovery, read_only: readOnly } = rows[0]!;
  if (recovery) return 'a standby (in recovery)';
  if (attrs === 'read-write' && readOnly === 'on') return 'read-only (default_transaction_read_only is on)';
  return undefined;
}

/**
 * Connections to the first of several hosts that answers and qualifies, as libpq does with a
 * multi-host connection string and `target_session_attrs`: each host in order, each attempt bounded
 * by the connect timeout and `timeoutMs`; a host that refuses, times out or does not qualify (a
 * standby, for `primary`) is skipped. The LISTEN connection starts over from the first host on every
 * attempt and keeps the host it got until that connection is lost. The module's pool sends where
 * the LISTEN connection listens ({@link follow}): a notification sent to another server (two
 * primaries at once, a split brain) would never reach it. Only while there is no LISTEN connection
 * does the pool search on its own, from the first host, and keep what it found until a connection
 * there fails or a statement there is refused as read-only.
 *
 * Invariant of the pool's connections: once the pool sends to a host, it holds no connection to
 * another. Moving (following the listener elsewhere, or a search that found another host) closes
 * those to any other host, idle or checked out; a read-only refusal closes every one to that host.
 */
export class HostSelector {
  /** The host of the live LISTEN connection, if any: where the pool sends. */
  private listening?: PglnHost;
  /** The host the pool's own search found, while there is no LISTEN connection; cleared when a connection there fails. */
  private found?: PglnHost;
  /** The pool's search in flight (one at a time), and how to stop it (shutdown). */
  private finding?: Promise<PglnHost>;
  private readonly stopSearch = new AbortController();
  /**
   * The last search of the pool's found no host: until `until`, connections fail with its error
   * instead of searching again (a storm of logins while no host qualifies); `times` in a row.
   */
  private searchFailed?: { error: unknown; until: number; times: number };
  /** The pool's connections ({@link poolClient}), connected and not ended. */
  private readonly pooled = new Set<Client>();
  /** The pool's connections still connecting, each to the host it was given. */
  private readonly connecting = new Set<Client>();

  /** The selector a pool of {@link createMultiHostPool} chooses its hosts with; undefined for any other pool. */
  static of(pool: object): HostSelector | undefined {
    return (pool as { [POOL_HOSTS]?: HostSelector })[POOL_HOSTS];
  }

  /** Marks `pool` as choosing its hosts with this selector (see {@link of}). */
  tag<T extends object>(pool: T): T {
    return Object.defineProperty(pool, POOL_HOSTS, { value: this });
  }

  constructor(
    /** In order; none: the one host of the connection settings given to {@link connect}. */
    readonly hosts: readonly PglnHost[],
    readonly attrs: PglnTargetSessionAttrs,
    /** How long the qualifying query may take. */
    private readonly timeoutMs: number,
  ) {}

  /**
   * A connected client on the first host, in order, that answers and qualifies, the settings it
   * connected with, and what each host before it answered; rejects with a {@link PglnConnectionError} that says what each host answered (or,
   * when every host refused the same settings for good, a wrong password say, with the first such
   * error, which retrying cannot fix). `signal` stops the search and destroys the connection in
   * flight. The client carries a listener for `'error'` that ignores it: add your own.
   */
  async connect(config: ClientConfig, signal?: AbortSignal): Promise<{ client: Client; config: ClientConfig; skipped: readonly string[] }> {
    const failures: string[] = [];
    const errors: unknown[] = [];
    for (const host of this.hosts.length > 0 ? this.hosts : [undefined]) {
      if (signal?.aborted) break;
      const settings = host ? { ...config, host: host.host, port: host.port ?? config.port } : config;
      const client = new pg.Client(settings);
      client.on('error', noop);
      const abort = () => destroyConnection(client);
      signal?.addEventListener('abort', abort);
      try {
        await client.connect();
        const reason = await withTimeout(disqualification(client, this.attrs), this.timeoutMs, () => new PglnTimeoutError(NO_ANSWER('The host check', this.timeoutMs)));
        if (reason === undefined) return { client, config: settings, skipped: failures };
        failures.push(HOST_NOT_QUALIFIED(this.describe(host, settings), reason, this.attrs));
      } catch (error) {
        errors.push(error);
        failures.push(`${this.describe(host, settings)}: ${describeError(error)}`);
      } finally {
        signal?.removeEventListener('abort', abort);
      }
      destroyConnection(client);
    }
    // One host: its own error, as without a choice. Every host refusing for good: the first such error.
    if (this.hosts.length <= 1 && errors.length === 1) throw errors[0];
    if (errors.length === this.hosts.length && errors.every(isFatalAtStartup)) throw errors[0];
    const target = this.hosts.map((host) => describeHost(host)).join(',');
    throw new PglnConnectionError(NO_HOST_QUALIFIES(this.attrs, failures), target);
  }

  /**
   * A `pg.Client` class for a pool (the module's own, or {@link createMultiHostPool}'s): each
   * connection goes to the host the pool sends to (see {@link follow}), searched for (with a
   * connection of `probe`'s settings, closed at once) when none is known. Whatever fails on one of
   * its connections, idle or checked out, is heard here, not only by pg-pool (which stops listening
   * to a connection it hands out): a lost connection or a FATAL makes the next connection search
   * again, a statement refused as read-only (SQLSTATE 25006, a demoted server) also closes every
   * connection to that host (see {@link failed}). Its connections carry a listener for `'error'`,
   * so one failing while checked out no longer crashes the process: its queries reject. Connecting
   * is bounded as searching is (the probe's `connectionTimeoutMillis`) unless the pool sets its own.
   */
  poolClient(Base: typeof pg.Client, probe: ClientConfig): typeof pg.Client {
    const selector = this;
    const bounded = (config?: string | ClientConfig) =>
      typeof config === 'object' && !config.connectionTimeoutMillis ? { ...config, connectionTimeoutMillis: probe.connectionTimeoutMillis } : config;
    return class HostClient extends Base {
      constructor(config?: string | ClientConfig) {
        super(bounded(config));
        this.on('error', (error: Error) => selector.failed(this, error));
        // Every error the server sends, whatever the query's form (promise, callback, cursor) and whoever checked it out.
        const internals = this as unknown as Internals;
        internals.connection.on('errorMessage', (message) => {
          if (!internals._connecting) selector.failed(this, message);
        });
        this.once('end', () => selector.pooled.delete(this));
      }

      // pg-pool calls connect(callback); everything else calls connect().
      override connect(): Promise<Client>;
      override connect(callback: (error: Error | null, client?: Client) => void): void;
      override connect(callback?: (error: Error | null, client?: Client) => void): Promise<Client> | void {
        const picked = selector.pick(probe).catch((error: unknown) => {
          // Never connected: told as pg tells a connection that failed, so that whoever tracks it lets it go.
          this.emit('end');
          throw error;
        });
        const connected = picked.then(async (host) => {
          // Ended (the pool shut down) while a host was being searched for: connect nowhere.
          if ((this as unknown as { _ending?: boolean })._ending) throw new Error('Connection terminated');
          this.host = host.host;
          if (host.port !== undefined) this.port = host.port;
          selector.connecting.add(this);
          await super.connect().catch((error: unknown) => {
            selector.forget(host);
            throw error;
          }).finally(() => selector.connecting.delete(this));
          // The pool moved while this connected: it would hold a connection to a host it no longer sends to.
          const now = selector.current();
          if (now && !isOn(this, now)) {
            destroyConnection(this);
            throw new Error(POOL_MOVED_WHILE_CONNECTING(describeHost(host), describeHost(now)));
          }
          selector.pooled.add(this);
          return this as Client;
        });
        if (!callback) return connected;
        connected.then((client) => callback(null, client), callback);
      }
    } as typeof pg.Client;
  }

  /**
   * The LISTEN connection now listens on `host` (undefined: it lost its connection). The pool sends
   * there; without one, its next connection searches from the first host, as the listener does.
   */
  follow(host: PglnHost | undefined): void {
    this.listening = host;
    if (host) {
      this.searchFailed = undefined;
      this.moveTo(host);
    } else this.found = undefined;
  }

  /**
   * A pooled connection failed with `error`: if it tells the host is gone or demoted (a read-only
   * refusal), the pool's next connection searches again, unless it follows the LISTEN connection,
   * which notices a lost server itself. A read-only refusal also closes the pool's connections to
   * that host: handed out again, each would be refused the same way.
   */
  failed(client: Client, error: unknown): void {
    const readOnly = isReadOnly(error);
    if (keepsConnection(error) && !readOnly) return;
    const host = { host: client.host, port: client.port };
    this.forget(host);
    // Once the refused query has its own error (it is being handled now): closed at once, it would get the closing's.
    if (readOnly) process.nextTick(() => this.retire((other) => isOn(other, host), `${describeHost(host)} refused a statement as read-only`));
  }

  /** Stops a search in flight (shutdown): its connection is destroyed. */
  stop(): void {
    this.stopSearch.abort();
  }

  /** Where the pool sends now: the LISTEN connection's host, or the one its own search found; undefined while unknown. */
  private current(): PglnHost | undefined {
    return this.listening ?? this.found;
  }

  /** Where the pool's next connection goes: the LISTEN connection's host, or the one found, or a search for one. */
  private pick(probe: ClientConfig): Promise<PglnHost> {
    const known = this.current();
    if (known) return Promise.resolve(known);
    const failed = this.searchFailed;
    if (failed && Date.now() < failed.until) return Promise.reject(failed.error);
    this.finding ??= this.connect(probe, this.stopSearch.signal)
      .then(
        ({ client, config }) => {
          this.searchFailed = undefined;
          destroyConnection(client);
          const found = { host: config.host!, port: config.port };
          this.found = found;
          // Found while the listener went live elsewhere: the listener's host wins.
          const now = this.current()!;
          if (now === found) this.moveTo(found);
          return now;
        },
        (error: unknown) => {
          const times = (this.searchFailed?.times ?? 0) + 1;
          this.searchFailed = { error, until: Date.now() + searchBackoff.delay(times), times };
          throw error;
        },
      )
      .finally(() => (this.finding = undefined));
    return this.finding;
  }

  private describe(host: PglnHost | undefined, settings: ClientConfig): string {
    return describeHost(host ?? { host: String(settings.host ?? 'localhost'), port: settings.port });
  }

  /** The pool sends to `host` now: its connections to any other host are closed. */
  private moveTo(host: PglnHost): void {
    this.retire((client) => !isOn(client, host), `the pool now connects to ${describeHost(host)}`);
  }

  /**
   * Closes the pool's connections that `which` picks, each with an error saying `why`: an idle one
   * is dropped by pg-pool (which emits the error on the pool), a checked-out one rejects its
   * queries, and is dropped when released.
   */
  private retire(which: (client: Client) => boolean, why: string): void {
    // Still connecting there: it would hold the pool's place for as long as the host takes to answer, if ever.
    for (const client of this.connecting) if (which(client)) destroyConnection(client);
    for (const client of this.pooled) {
      if (!which(client)) continue;
      this.pooled.delete(client);
      const host = describeHost({ host: client.host, port: client.port });
      // One being ended already (released with an error, say) is only closed faster.
      if (!(client as unknown as Internals)._ending) (client as unknown as Internals).connection.emit('error', new Error(POOL_CONNECTION_RETIRED(host, why)));
      destroyConnection(client);
    }
  }

  private forget(host: PglnHost): void {
    const { found } = this;
    if (found && isOn(host, found)) this.found = undefined;
  }
}
