import pg from 'pg';
import type { Client, ClientConfig, Pool, PoolConfig } from 'pg';
import { destroyConnection } from './pgln.connection.js';

const noop = () => undefined;

/** Resolves when `promise` settles or `ms` have passed, whichever comes first; never rejects. */
function settledWithin(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise.then(noop, noop),
    new Promise<void>((resolve) => (timer = setTimeout(resolve, ms))),
  ]).finally(() => clearTimeout(timer));
}

/**
 * The pool the module creates (from `connectionString` or a `PoolConfig`) and so ends at
 * shutdown. It knows every connection it ever made, from the moment pg-pool constructs it: pg-pool's
 * `end()` waits for a connection attempt without bound (a pool without `connectionTimeoutMillis`,
 * or a long one, over a dead network), and ends idle connections politely, which over a dead
 * network leaves their sockets open for good, waiting for a FIN that never comes.
 */
export class OwnedPool {
  readonly pool: Pool;
  /** Every connection made and not yet ended: connecting, checked out or idle. */
  private readonly clients = new Set<Client>();

  constructor(config: PoolConfig) {
    const clients = this.clients;
    const Base = (config as { Client?: typeof pg.Client }).Client ?? pg.Client;
    class Tracked extends Base {
      constructor(options?: ClientConfig) {
        super(options);
        clients.add(this);
        this.once('end', () => clients.delete(this));
      }
    }
    this.pool = new pg.Pool({ ...config, Client: Tracked } as PoolConfig);
  }

  /**
   * Ends the pool: waits up to `releaseMs` for checked-out connections to come back and connection
   * attempts to finish, then up to `disconnectMs` for connections to close politely; whatever is
   * left then is destroyed. Resolves within about `releaseMs + disconnectMs`.
   */
  async end(releaseMs: number, disconnectMs: number): Promise<void> {
    const ended = this.pool.end();
    await settledWithin(ended, releaseMs);
    const closing = [...this.clients].map((client) => new Promise<void>((resolve) => client.once('end', resolve)));
    await settledWithin(Promise.all(closing), disconnectMs);
    for (const client of this.clients) destroyConnection(client);
    this.clients.clear();
    // Destroyed, every attempt has failed and every client is removed: pg-pool's end() settles now.
    await settledWithin(ended, disconnectMs);
  }
}
