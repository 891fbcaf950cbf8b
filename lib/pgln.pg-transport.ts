import type { Logger } from '@nestjs/common';
import type { Pool, PoolClient } from 'pg';
import { PglnTimeoutError } from './errors/index.js';
import type { PglnNotifyManyQuery, PglnNotifyQuery } from './interfaces/index.js';
import { destroyConnection, keepsConnection } from './pgln.connection.js';
import type { ResolvedConnection } from './pgln.connection-options.js';
import { NOTIFY_NO_CONNECTION, NOTIFY_POOL_STUCK, NOTIFY_TIMEOUT, POOL_CLIENT_ERROR } from './pgln.messages.js';
import { run } from './pgln.notify-query.js';
import { withTimeout } from './pgln.promises.js';
import { ListenSession, type ListenSessionEvents } from './pgln.session.js';
import type { Outgoing, PglnTransport, Session } from './pgln.transport.js';
import { HostSelector, isReadOnly } from './pgln.host-selector.js';
import { ResyncSlots } from './pgln.resync-gate.js';

/** pg-pool's errors when its own `connectionTimeoutMillis` ran out: waiting for a connection, or opening one. */
const POOL_TIMEOUT = /^(timeout exceeded when trying to connect|Connection terminated due to connection timeout)$/;

function isPoolTimeout(error: unknown): boolean {
  return error instanceof Error && !(error instanceof PglnTimeoutError) && POOL_TIMEOUT.test(error.message);
}

/** The least time a notify query is given once it has a connection (less when notifyTimeoutMs is small). */
const MIN_QUERY_MS = 1_000;

/**
 * PostgreSQL through node-postgres: LISTEN sessions on connections of their own, notifications
 * sent through the pool (the module's, or the application's) or the caller's executor.
 */
export class PgTransport implements PglnTransport {
  /** Connections the pool has yet to hand over for notifications that timed out waiting for them. */
  private owed = 0;

  constructor(
    private readonly connection: ResolvedConnection,
    private readonly notifyTimeoutMs: number,
    /** How long a query on a LISTEN session, or closing a connection, may take. */
    private readonly timeoutMs: number,
    logger: Logger,
  ) {
    if (connection.owned) {
      // An idle pooled client whose connection dies emits 'error' on the pool; unheard, it would crash the app.
      connection.pool.on('error', (error) => logger.warn(POOL_CLIENT_ERROR(error.message)));
    }
  }

  get target(): string {
    return this.connection.target;
  }

  session(events: ListenSessionEvents, { spare = false }: { spare?: boolean } = {}): ListenSession {
    const { listener, hosts } = this.connection;
    if (!spare) return new ListenSession(listener, this.timeoutMs, events, hosts);
    const config = { ...listener, application_name: `${listener.application_name}-spare` };
    return new ListenSession(config, this.timeoutMs, events, hosts, listener.application_name);
  }

  /** Slots held on a connection of their own, with the LISTEN connection's settings and hosts (never through a pooler). */
  resyncSlots(name: string, concurrency: number, holdMs: number, logger: Logger): ResyncSlots {
    const { listener, hosts } = this.connection;
    const config = { ...listener, application_name: `${listener.application_name}-resync` };
    const selector = hosts ?? new HostSelector([], 'any', this.timeoutMs);
    const connect = () => selector.connect(config).then(({ client }) => client);
    return new ResyncSlots(connect, name, concurrency, holdMs, this.timeoutMs, logger);
  }

  /** The pool sends where the listener listens, when they choose among the same hosts. */
  live(session: Session | undefined): void {
    const { hosts, poolHosts } = this.connection;
    if (poolHosts && poolHosts === hosts) poolHosts.follow(session?.host);
  }

  /** On the caller's executor, as it is (no timeout, no release: the connection is theirs); else through the pool. */
  async send({ query, what, executor }: Outgoing): Promise<void> {
    if (executor) await run(executor, query);
    else await this.sendPooled(query, what);
  }

  /** A statement through the pool; pg-pool hears the connection's errors meanwhile. */
  query(text: string, values?: unknown[]): Promise<{ rows: any[] }> {
    return this.connection.pool.query(text, values);
  }

  /**
   * Ends the pool if the module created it: a notification in flight gets `notifyTimeoutMs`,
   * connections `timeoutMs` to close politely, then what is left is destroyed.
   */
  async end(): Promise<void> {
    // A pool of yours (createMultiHostPool's) stops its own search when you end it.
    if (this.connection.owned) this.connection.poolHosts?.stop();
    await this.connection.owned?.end(this.notifyTimeoutMs, this.timeoutMs);
  }

  /**
   * Runs a notify statement on a pooled connection. `notifyTimeoutMs` bounds the whole call, from
   * asking the pool for a connection to PostgreSQL's answer; `what` names it in a timeout error.
   */
  private async sendPooled({ text, values }: PglnNotifyQuery | PglnNotifyManyQuery, what: () => string): Promise<void> {
    const { pool } = this.connection;
    const { notifyTimeoutMs } = this;
    const deadline = Date.now() + notifyTimeoutMs;
    const client = await this.checkout(what);
    // The query gets at least this long: with less, a healthy connection would look hung.
    const floor = Math.min(notifyTimeoutMs / 2, MIN_QUERY_MS);
    if (deadline - Date.now() < floor) {
      client.release();
      throw new PglnTimeoutError(NOTIFY_NO_CONNECTION(what(), `notifyTimeoutMs (${notifyTimeoutMs} ms)`, pool));
    }
    // pg-pool stops listening for errors of a connection it hands out: unheard, one would crash the process.
    let broken = false;
    const onError = () => (broken = true);
    client.on('error', onError);
    try {
      await withTimeout(client.query(text, values as unknown[]), deadline - Date.now(), () => {
        broken = true;
        return new PglnTimeoutError(NOTIFY_TIMEOUT(what(), notifyTimeoutMs));
      });
      client.release();
    } catch (error) {
      // A host gone or demoted (a read-only refusal): the pool's connection class has told its selector (HostSelector.poolClient).
      if (broken || !keepsConnection(error) || isReadOnly(error)) {
        // Failed, hung (a half-open socket never answers), ended by the server (FATAL), or on a
        // server that refuses to write (a standby): destroyed rather than reused.
        client.release(error as Error);
        destroyConnection(client);
      } else {
        // The server answered with an error (a full notification queue, say): the session lives on.
        client.release();
      }
      throw error;
    } finally {
      client.removeListener('error', onError);
    }
  }

  /**
   * A connection from the pool within `notifyTimeoutMs`. One handed over later goes straight
   * back. While the pool still owes as many late connections as it may open, nothing more is
   * asked of it: the call fails at once instead of adding a waiter.
   */
  private async checkout(what: () => string): Promise<PoolClient> {
    const { pool } = this.connection;
    const { notifyTimeoutMs } = this;
    const limit = (pool as Pool & { options?: { max?: number } }).options?.max ?? 10;
    if (this.owed >= limit) throw new PglnTimeoutError(NOTIFY_POOL_STUCK(what(), this.owed));
    const checkout = pool.connect();
    const late = withTimeout(checkout, notifyTimeoutMs, () => {
      this.owed++;
      checkout.then(
        (client) => {
          this.owed--;
          client.release();
        },
        () => this.owed--,
      );
      return new PglnTimeoutError(NOTIFY_NO_CONNECTION(what(), `notifyTimeoutMs (${notifyTimeoutMs} ms)`, pool));
    });
    return late.catch((error: unknown) => {
      // pg-pool's own connect timeout came first: the same outcome, said as such.
      if (!isPoolTimeout(error)) throw error;
      const poolTimeoutMs = (pool as Pool & { options?: { connectionTimeoutMillis?: number } }).options?.connectionTimeoutMillis ?? 0;
      throw new PglnTimeoutError(NOTIFY_NO_CONNECTION(what(), `its connectionTimeoutMillis (${poolTimeoutMs} ms)`, pool), { cause: error });
    });
  }
}
