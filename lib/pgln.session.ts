import pg from 'pg';
import type { Client, ClientConfig, Notification, QueryResultRow } from 'pg';
import { PglnTimeoutError } from './errors/index.js';
import { destroyConnection } from './pgln.connection.js';
import { NO_ANSWER } from './pgln.messages.js';
import { withTimeout } from './pgln.promises.js';

const noop = () => undefined;

/** What a {@link ListenSession} tells its owner. */
export interface ListenSessionEvents {
  /** A notification arrived (pg's own object). */
  readonly notification: (message: Notification) => void;
  /**
   * The session can no longer be trusted: the driver reported an error or the end of the
   * connection, or a query got no answer in time. Called at most once; the connection is
   * destroyed by then.
   */
  readonly lost: (session: ListenSession, error?: Error) => void;
}

/**
 * One connection that holds LISTENs: its queries and nothing else. Queries run one at a time
 * (pg 8 warns about queueing on a busy client, pg 9 will not queue), each bounded by
 * `timeoutMs` once sent. A query that gets no answer in time means the session is gone (a
 * half-open socket never answers): it is reported lost, whoever sent the query.
 */
export class ListenSession {
  private readonly client: Client;
  /** The last query sent: each waits for the one before. */
  private tail: Promise<unknown> = Promise.resolve();
  private ended = false;

  constructor(
    config: ClientConfig,
    private readonly timeoutMs: number,
    private readonly events: ListenSessionEvents,
  ) {
    this.client = new pg.Client(config);
    this.client.on('error', (error) => this.lose(error));
    this.client.on('end', () => this.lose());
    this.client.on('notification', events.notification);
  }

  /** Opens the connection (pg's `connectionTimeoutMillis` bounds it); on failure the connection is destroyed. */
  async connect(): Promise<void> {
    try {
      await this.client.connect();
    } catch (error) {
      this.ended = true;
      destroyConnection(this.client);
      throw error;
    }
  }

  /** LISTENs on every name in one round trip. */
  async listen(names: readonly string[]): Promise<void> {
    if (names.length === 0) return;
    await this.query(names.map((name) => `LISTEN ${this.client.escapeIdentifier(name)}`).join('; '), 'LISTEN');
  }

  /** UNLISTENs one channel. */
  async unlisten(name: string): Promise<void> {
    await this.query(`UNLISTEN ${this.client.escapeIdentifier(name)}`, 'UNLISTEN');
  }

  /** The channels the server says this session listens on. */
  async listeningChannels(): Promise<Set<string>> {
    const { rows } = await this.query<{ channel: string }>('SELECT pg_listening_channels() AS channel', 'Health check');
    return new Set(rows.map((row) => row.channel));
  }

  /** UNLISTENs everything and disconnects, each step bounded by `timeoutMs`; the connection is destroyed in any case. */
  async close(): Promise<void> {
    if (!this.ended) {
      await this.query('UNLISTEN *', 'UNLISTEN').catch(noop);
      const { timeoutMs } = this;
      await withTimeout(this.client.end(), timeoutMs, () => new PglnTimeoutError(NO_ANSWER('Disconnect', timeoutMs))).catch(noop);
    }
    this.destroy();
  }

  /** Drops the connection at once, without telling the owner. */
  destroy(): void {
    this.ended = true;
    this.client.removeListener('notification', this.events.notification);
    destroyConnection(this.client);
  }

  private query<R extends QueryResultRow = QueryResultRow>(sql: string, what: string) {
    const { timeoutMs } = this;
    const send = () =>
      withTimeout(this.client.query<R>(sql), timeoutMs, () => {
        const error = new PglnTimeoutError(NO_ANSWER(what, timeoutMs));
        this.lose(error);
        return error;
      });
    const result = this.tail.then(send, send);
    this.tail = result.catch(noop);
    return result;
  }

  private lose(error?: Error): void {
    if (this.ended) return;
    this.destroy();
    this.events.lost(this, error);
  }
}
