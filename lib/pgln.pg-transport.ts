import type { Logger } from '@nestjs/common';
import type { ResolvedConnection } from './pgln.connection-options.js';
import { POOL_CLIENT_ERROR } from './pgln.messages.js';
import { run } from './pgln.notify-query.js';
import { NotifyPool } from './pgln.notify-pool.js';
import { ListenSession, type ListenSessionEvents } from './pgln.session.js';
import type { Outgoing, PglnTransport, Session } from './pgln.transport.js';
import { HostSelector } from './pgln.host-selector.js';
import { ResyncSlots } from './pgln.resync-gate.js';

/**
 * PostgreSQL through node-postgres: LISTEN sessions on connections of their own, notifications
 * sent through the pool (the module's, or the application's) or the caller's executor.
 */
export class PgTransport implements PglnTransport {
  /** Notifications without an executor go through the pool, each bounded by `notifyTimeoutMs`. */
  private readonly notifyPool: NotifyPool;

  constructor(
    private readonly connection: ResolvedConnection,
    private readonly notifyTimeoutMs: number,
    /** How long a query on a LISTEN session, or closing a connection, may take. */
    private readonly timeoutMs: number,
    logger: Logger,
  ) {
    this.notifyPool = new NotifyPool(connection.pool, notifyTimeoutMs, connection.poolHosts, connection.owned !== undefined);
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
  send({ query, what, executor }: Outgoing): Promise<void> {
    return executor ? run(executor, query) : this.notifyPool.send(query, what);
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
    this.notifyPool.close();
    // A pool of yours (createMultiHostPool's) stops its own search when you end it.
    if (this.connection.owned) this.connection.poolHosts?.stop();
    await this.connection.owned?.end(this.notifyTimeoutMs, this.timeoutMs);
  }
}
