import { randomInt, randomUUID } from 'node:crypto';
import type { Client, ClientConfig, Notification, QueryResultRow } from 'pg';
import type { PglnHost } from './interfaces/index.js';
import { PglnTimeoutError } from './errors/index.js';
import { destroyConnection, keepsConnection } from './pgln.connection.js';
import { HostSelector } from './pgln.host-selector.js';
import { describeHost } from './pgln.hosts.js';
import { NO_ANSWER } from './pgln.messages.js';
import { withTimeout } from './pgln.promises.js';
import { probeReceives, type ProbeVerdict } from './pgln.receive-probe.js';
import type { Session } from './pgln.transport.js';

const noop = () => undefined;

/**
 * Whether a failed LISTEN was refused for its name, on a session that lives on: SQLSTATE class 22
 * (data exception: 22P05, a character the database's encoding lacks) or 42 (a name it rejects).
 * Anything else (a standby in recovery, a lost connection) is the session's failure.
 */
function refusesName(error: unknown): boolean {
  return keepsConnection(error) && /^(22|42)/.test((error as { code: string }).code);
}

/**
 * Who a session's backend is, so that a later session can terminate it and nothing else: its PID,
 * an advisory lock only this session holds (two random keys), its `application_name`, and the
 * `marker` comment that starts every statement the session sends. A PID reused later, or a backend
 * a session-mode pooler hands to another client, is never taken for it: `DISCARD ALL` releases
 * the lock, and a pooler that does not reset sessions (PgBouncer with an empty
 * `server_reset_query`) sets the next client's `application_name` on it, or that client's first
 * statement replaces the last one `pg_stat_activity` shows.
 */
export interface BackendIdentity {
  readonly pid: number;
  readonly keys: readonly [number, number];
  /**
   * The `application_name`s `pg_stat_activity` may show for it: the one it connected with and, for
   * a spare whose rename was sent (whether or not the answer came back), the listener's.
   */
  readonly applicationNames: readonly string[];
  readonly marker: string;
}

/** What the health check reads from the session in one round trip. */
export interface SessionHealth {
  /** The channels the session LISTENs on. */
  readonly channels: ReadonlySet<string>;
  /** `pg_notification_queue_usage()`: how full the server's notification queue is, 0 to 1. */
  readonly queueUsage: number;
}

/** What a {@link ListenSession} tells its owner. */
export interface ListenSessionEvents {
  /** A notification arrived (pg's own object). */
  readonly notification: (message: Notification) => void;
  /**
   * The session can no longer be trusted: the driver reported an error or the end of the
   * connection, or a query got no answer in time. Called at most once; the connection is
   * destroyed by then.
   */
  readonly lost: (session: Session, error?: Error) => void;
}

/**
 * One connection that holds LISTENs: its queries and nothing else. Queries run one at a time
 * (pg 8 warns about queueing on a busy client, pg 9 will not queue), each bounded by
 * `timeoutMs` once sent. A query that gets no answer in time means the session is gone (a
 * half-open socket never answers): it is reported lost, whoever sent the query.
 */
export class ListenSession implements Session {
  /** Its connection, once {@link connect} got one. */
  private client?: Client;
  /** Aborted by {@link destroy}: a connection attempt in flight stops. */
  private readonly stopConnecting = new AbortController();
  /** The last query sent: each waits for the one before. */
  private tail: Promise<unknown> = Promise.resolve();
  /** Its backend, once connected. */
  identity?: BackendIdentity;
  /** The host it connected to, and why it skipped those before it, when it chose among several. */
  server?: string;
  /** The host it connected to, when it chose among several. */
  host?: PglnHost;
  /** The advisory lock's keys, and the comment that starts every statement (see {@link BackendIdentity}). */
  private readonly keys = [randomInt(2 ** 31), randomInt(2 ** 31)] as const;
  private readonly marker = `/* pgln ${this.keys[0]}-${this.keys[1]} */`;
  private ended = false;
  /** Ends the wait of {@link receivesFromOthers}: the session is gone, nothing will arrive any more. */
  private stopProbe?: () => void;

  constructor(
    /** Its settings; once connected, those of the host it connected to. */
    private config: ClientConfig,
    private readonly timeoutMs: number,
    private readonly events: ListenSessionEvents,
    /** Which host it connects to: the first of several that qualifies, or the one of `config`. */
    private readonly hosts: HostSelector = new HostSelector([], 'any', timeoutMs),
    /**
     * For a spare: the `application_name` it takes with its first LISTEN (it connects as
     * `<name>-spare`, so that only the live session is named `<name>`).
     */
    private promoteAs?: string,
  ) {}

  /**
   * Opens the connection (pg's `connectionTimeoutMillis` bounds each attempt) on the host the
   * selector chooses, and learns who its backend is; on failure the connection is destroyed.
   */
  async connect(): Promise<void> {
    try {
      const { client, config, skipped } = await this.hosts.connect(this.config, this.stopConnecting.signal);
      this.client = client;
      this.config = config;
      if (this.hosts.hosts.length > 0) {
        this.host = { host: String(config.host), port: config.port };
        const host = describeHost(this.host);
        this.server = skipped.length > 0 ? `${host} (skipped ${skipped.join('; ')})` : host;
      }
      client.on('error', (error: Error) => this.lose(error));
      client.on('end', () => this.lose());
      client.on('notification', this.events.notification);
      if (this.ended) throw new Error('the session was closed while connecting');
      const { keys } = this;
      const { rows } = await this.query<{ pid: number; name: string }>(
        "SELECT pg_backend_pid() AS pid, current_setting('application_name') AS name, pg_try_advisory_lock($1::int, $2::int) AS locked",
        'Identify',
        [...keys],
      );
      this.identity = { pid: rows[0]!.pid, keys, applicationNames: shownAs(rows[0]!.name), marker: this.marker };
    } catch (error) {
      this.destroy();
      throw error;
    }
  }

  /**
   * LISTENs on every name, in one round trip unless the server refuses one. Resolves with the
   * names the server refused, each with its error (a name the database's encoding cannot hold,
   * say); it listens on all the others. Rejects when the session failed.
   */
  async listen(names: readonly string[]): Promise<Map<string, Error>> {
    const refused = new Map<string, Error>();
    // A spare taking over renames itself in the same round trip.
    const rename = this.promoteAs === undefined ? [] : [`SET application_name = ${this.connection.escapeLiteral(this.promoteAs)}`];
    this.renaming();
    try {
      const statements = [...rename, ...names.map((name) => this.listenStatement(name))];
      if (statements.length > 0) await this.query(statements.join('; '), 'LISTEN');
      this.promoteAs = undefined;
      return refused;
    } catch (error) {
      if (!refusesName(error)) throw error;
      if (names.length === 1 && rename.length === 0) return refused.set(names[0]!, error as Error);
    }
    // The statements ran as one transaction, so none took effect: the rename on its own, then one LISTEN at a time.
    if (rename.length > 0) {
      await this.query(rename[0]!, 'LISTEN');
      this.promoteAs = undefined;
    }
    for (const name of names) {
      try {
        await this.query(this.listenStatement(name), 'LISTEN');
      } catch (error) {
        if (!refusesName(error)) throw error;
        refused.set(name, error as Error);
      }
    }
    return refused;
  }

  /**
   * The rename of a spare was sent: from now on its backend may show either name (the answer may
   * never come back), and a later session must recognise it by both.
   */
  private renaming(): void {
    if (this.promoteAs === undefined || !this.identity) return;
    const names = new Set([...this.identity.applicationNames, ...shownAs(this.promoteAs)]);
    this.identity = { ...this.identity, applicationNames: [...names] };
  }

  /** UNLISTENs one channel. */
  async unlisten(name: string): Promise<void> {
    await this.query(`UNLISTEN ${this.connection.escapeIdentifier(name)}`, 'UNLISTEN');
  }

  /** The channels the server says this session listens on, and how full the notification queue is. */
  async health(): Promise<SessionHealth> {
    const { rows } = await this.query<{ channels: string[]; usage: number }>(
      'SELECT array(SELECT pg_listening_channels()) AS channels, pg_notification_queue_usage() AS usage',
      'Health check',
    );
    return { channels: new Set(rows[0]!.channels), queueUsage: rows[0]!.usage };
  }

  /**
   * Terminates the backends of earlier sessions that are still there (a half-open connection's
   * backend lives on until TCP gives up, LISTENing and never reading, which pins the server's
   * notification queue). Resolves with the PIDs terminated.
   */
  async terminate(backends: readonly BackendIdentity[]): Promise<number[]> {
    // In the select list, not the WHERE clause: only rows that matched are ever terminated. A
    // backend matches while it holds the advisory lock its session took, still has that session's
    // application_name (one of them: a row per name), last ran a statement of that session's, and is never this one.
    const candidates = backends.flatMap((backend) => backend.applicationNames.map((name) => ({ backend, name })));
    const { rows } = await this.query<{ pid: number; terminated: boolean }>(
      'SELECT l.pid, pg_terminate_backend(l.pid) AS terminated FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid ' +
        "JOIN unnest($1::int[], $2::int[]::oid[], $3::int[]::oid[], $4::text[], $5::text[]) AS b(pid, key1, key2, name, marker) " +
        'ON b.pid = l.pid AND b.key1 = l.classid AND b.key2 = l.objid AND b.name = a.application_name ' +
        "AND starts_with(a.query, b.marker) WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.granted AND l.pid <> pg_backend_pid()",
      'Terminate',
      [
        candidates.map(({ backend }) => backend.pid),
        candidates.map(({ backend }) => backend.keys[0]),
        candidates.map(({ backend }) => backend.keys[1]),
        candidates.map(({ name }) => name),
        candidates.map(({ backend }) => backend.marker),
      ],
    );
    return rows.filter((row) => row.terminated).map((row) => row.pid);
  }

  /**
   * Whether a notification sent from another connection reaches this session: `send(channel,
   * payload)` sends it, on a probe channel of its own, after LISTEN. Through a pooler in
   * transaction mode LISTEN "works" (even a notification sent on this very session arrives) but
   * nothing sent elsewhere ever does. Resolves false when none arrived within `timeoutMs`.
   */
  async receivesFromOthers(send: (channel: string, payload: string) => Promise<unknown>): Promise<boolean> {
    const channel = `pgln_probe_${randomUUID().replaceAll('-', '')}`;
    const token = randomUUID();
    let arrived = false;
    let resolve!: () => void;
    const received = new Promise<void>((r) => (resolve = this.stopProbe = r));
    const onNotification = (message: Notification) => {
      if (message.channel !== channel || message.payload !== token) return;
      arrived = true;
      resolve();
    };
    this.connection.on('notification', onNotification);
    try {
      await this.listen([channel]);
      await send(channel, token);
      await withTimeout(received, this.timeoutMs, () => new Error('no probe')).catch(noop);
      // A stalled event loop can fire the timer before reading what arrived: one round trip settles
      // it, since the server sends pending notifications before it answers.
      if (!arrived) await this.query('SELECT 1', 'Probe');
      return arrived;
    } finally {
      this.stopProbe = undefined;
      this.connection.removeListener('notification', onNotification);
      await this.unlisten(channel).catch(noop);
    }
  }

  /** Whether it hears notifications from other connections: see {@link probeReceives}. */
  probe(signal: AbortSignal): Promise<ProbeVerdict> {
    return probeReceives(this, this.config, this.timeoutMs, signal);
  }

  /** UNLISTENs everything and disconnects, each step bounded by `timeoutMs`; the connection is destroyed in any case. */
  async close(): Promise<void> {
    // Still connecting (or never connected): nothing to say goodbye on.
    if (!this.ended && this.client) {
      await this.query('UNLISTEN *', 'UNLISTEN').catch(noop);
      const { timeoutMs } = this;
      await withTimeout(this.connection.end(), timeoutMs, () => new PglnTimeoutError(NO_ANSWER('Disconnect', timeoutMs))).catch(noop);
    }
    this.destroy();
  }

  /** Drops the connection at once, without telling the owner. */
  destroy(): void {
    this.ended = true;
    this.stopConnecting.abort();
    this.stopProbe?.();
    if (!this.client) return;
    this.client.removeListener('notification', this.events.notification);
    destroyConnection(this.client);
  }

  private listenStatement(name: string): string {
    return `LISTEN ${this.connection.escapeIdentifier(name)}`;
  }

  /** Its connection: there is one once {@link connect} resolved. */
  private get connection(): Client {
    if (!this.client) throw new Error('the session is not connected');
    return this.client;
  }

  private query<R extends QueryResultRow = QueryResultRow>(sql: string, what: string, values?: unknown[]) {
    const { timeoutMs } = this;
    const text = `${this.marker} ${sql}`;
    const send = () =>
      withTimeout(this.connection.query<R>(text, values), timeoutMs, () => {
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

/**
 * The `application_name`s PostgreSQL may show for `name` in `pg_stat_activity`: as given, with
 * characters other than printable ASCII replaced by `?` (as it stores them), and each cut to the 63
 * bytes the view keeps.
 */
function shownAs(name: string): string[] {
  const cleaned = name.replace(/[^\x20-\x7e]/g, '?');
  const cut = (text: string) => Buffer.from(text).subarray(0, 63).toString('utf8').replace(/\uFFFD$/, '');
  return [...new Set([name, cleaned, cut(name), cut(cleaned)])];
}
