import type { Pool, PoolClient } from 'pg';
import { PglnTimeoutError } from './errors/index.js';
import type { PglnNotifyManyQuery, PglnNotifyQuery } from './interfaces/index.js';
import { destroyConnection, keepsConnection } from './pgln.connection.js';
import { Deadlines, type Deadlined } from './pgln.deadlines.js';
import { isReadOnly, type HostSelector } from './pgln.host-selector.js';
import { NOTIFY_NO_CONNECTION, NOTIFY_POOL_STUCK, NOTIFY_TIMEOUT } from './pgln.messages.js';

/** pg-pool's errors when its own `connectionTimeoutMillis` ran out: waiting for a connection, or opening one. */
const POOL_TIMEOUT = /^(timeout exceeded when trying to connect|Connection terminated due to connection timeout)$/;

function isPoolTimeout(error: unknown): boolean {
  return error instanceof Error && !(error instanceof PglnTimeoutError) && POOL_TIMEOUT.test(error.message);
}

/** The least time a notify query is given once it has a connection (less when notifyTimeoutMs is small). */
const MIN_QUERY_MS = 1_000;

type PoolSettings = Pool & { options?: { max?: number; connectionTimeoutMillis?: number }; ending?: boolean };

/**
 * Sends notify statements on connections of a pg.Pool (the module's, or the application's).
 * `timeoutMs` (`notifyTimeoutMs`) bounds each call from asking the pool for a connection to
 * PostgreSQL's answer. A connection that failed, hung, was ended by the server or refuses to write
 * is destroyed, never reused; an `'error'` it emits while checked out never crashes the process.
 *
 * This is the path every application takes, so each call costs what a bare `pool.query` costs
 * and little more: pg's callback forms (no promise per step), one promise, and no timer of its own
 * ({@link Deadlines}).
 */
export class NotifyPool {
  /** Connections the pool has yet to hand over for notifications that timed out waiting for them. */
  owed = 0;
  /** Every call's two deadlines: when only the query's floor is left, and the end. */
  readonly deadlines: Deadlines;
  /** The module's own pool's connections that already carry {@link markBroken}, for good. */
  private readonly guarded = new WeakSet<PoolClient>();
  /** Connections that emitted `'error'` while they carried {@link markBroken}. */
  readonly broken = new WeakSet<PoolClient>();
  /**
   * pg-pool stops listening for errors of a connection it hands out: unheard, one would crash the
   * process. One function for every connection (EventEmitter calls it with the connection as `this`).
   */
  private readonly markBroken: (this: PoolClient) => void;

  constructor(
    readonly pool: Pool,
    readonly timeoutMs: number,
    /** Which of several hosts the pool connects to: told of a host gone or demoted. */
    readonly hosts: HostSelector | undefined,
    /**
     * The module created the pool: its connections keep the error listener from their first
     * checkout on. An application's pool gets it only while a notification holds the connection.
     */
    private readonly owned: boolean,
  ) {
    // The query gets at least this long: with less, a healthy connection would look hung.
    this.deadlines = new Deadlines(timeoutMs, Math.min(timeoutMs / 2, MIN_QUERY_MS));
    const broken = this.broken;
    this.markBroken = function (this: PoolClient) {
      broken.add(this);
    };
  }

  /**
   * Runs a notify statement on a pooled connection; `what` names it in an error. While the pool
   * still owes as many late connections as it may open, nothing more is asked of it: the call
   * fails at once instead of adding a waiter.
   */
  send(query: PglnNotifyQuery | PglnNotifyManyQuery, what: () => string): Promise<void> {
    const limit = (this.pool as PoolSettings).options?.max ?? 10;
    // An ended pool says so itself (pg-pool fails at once), whatever it still owes.
    if (this.owed >= limit && !(this.pool as PoolSettings).ending) return Promise.reject(new PglnTimeoutError(NOTIFY_POOL_STUCK(what(), this.owed)));
    return new Promise<void>((resolve, reject) => void new PooledNotify(this, query, what, resolve, reject));
  }

  /** At shutdown: notifications in flight keep their deadlines; no timer is left after them. */
  close(): void {
    this.deadlines.close();
  }

  /** A connection handed over for a notification: it carries {@link markBroken} until {@link unguard}. */
  guard(client: PoolClient): void {
    if (!this.owned) client.on('error', this.markBroken);
    else if (!this.guarded.has(client)) {
      this.guarded.add(client);
      client.on('error', this.markBroken);
    }
  }

  /** The notification is done with the connection (before its release). */
  unguard(client: PoolClient): void {
    if (!this.owned) client.removeListener('error', this.markBroken);
  }
}

/**
 * One notification on its way through the pool: waiting for a connection, then for the answer.
 * Its deadlines ({@link Deadlines}): when only the query's floor is left, a connection handed
 * over after that goes straight back (the query would get too little time); `timeoutMs` after the
 * call began, it fails: a connection still to come goes back to the pool once it does, one in use
 * is destroyed.
 */
class PooledNotify implements Deadlined {
  startedAt = 0;
  prev?: Deadlined;
  next?: Deadlined;
  warned = false;
  private phase: 'waiting' | 'late' | 'querying' | 'done' = 'waiting';
  private client?: PoolClient;

  constructor(
    private readonly sender: NotifyPool,
    private readonly query: PglnNotifyQuery | PglnNotifyManyQuery,
    private readonly what: () => string,
    private readonly resolve: () => void,
    private readonly reject: (error: unknown) => void,
  ) {
    // Timed before asking: pg-pool may answer at once (a pool being ended does).
    sender.deadlines.add(this);
    try {
      sender.pool.connect(this.onConnection);
    } catch (error) {
      // Not pg-pool after all, or broken: nothing was asked for, nothing is owed.
      this.finish();
      reject(error);
    }
  }

  /** Only the query's floor is left. */
  onWarning(): void {
    if (this.phase === 'waiting') this.phase = 'late';
  }

  /** `timeoutMs` have passed. */
  onExpiry(): void {
    if (this.phase === 'late' || this.phase === 'waiting') {
      // Still nothing from the pool. What it hands over later goes straight back, and is owed till then.
      this.phase = 'done';
      this.sender.owed++;
      this.reject(this.noConnection(`notifyTimeoutMs (${this.sender.timeoutMs} ms)`));
    } else if (this.phase === 'querying') {
      // Hung (a half-open socket never answers): failed, and the connection destroyed.
      this.failed(this.client!, new PglnTimeoutError(NOTIFY_TIMEOUT(this.what(), this.sender.timeoutMs)), true);
    }
  }

  private readonly onConnection = (error: Error | undefined, client: PoolClient | undefined): void => {
    if (this.phase === 'done') {
      // The call timed out waiting: a connection handed over now goes straight back.
      this.sender.owed--;
      client?.release();
      return;
    }
    if (error || !client) {
      this.finish();
      if (!isPoolTimeout(error)) return this.reject(error);
      // pg-pool's own connect timeout came first: the same outcome, said as such.
      const poolTimeoutMs = (this.sender.pool as PoolSettings).options?.connectionTimeoutMillis ?? 0;
      return this.reject(this.noConnection(`its connectionTimeoutMillis (${poolTimeoutMs} ms)`, error));
    }
    if (this.phase === 'late') {
      this.finish();
      client.release();
      return this.reject(this.noConnection(`notifyTimeoutMs (${this.sender.timeoutMs} ms)`));
    }
    this.phase = 'querying';
    this.client = client;
    this.sender.guard(client);
    try {
      client.query(this.query.text, this.query.values as unknown[], this.onAnswer);
    } catch (thrown) {
      this.failed(client, thrown, false);
    }
  };

  private readonly onAnswer = (error: Error | null | undefined): void => {
    // Timed out already: the connection was destroyed, the call has failed.
    if (this.phase === 'done') return;
    const client = this.client!;
    if (error) return this.failed(client, error, this.sender.broken.has(client));
    this.finish();
    // Releasing may hand the connection to the next notification at once (within this call), which guards it again.
    this.sender.unguard(client);
    client.release();
    this.resolve();
  };

  /** The query failed, or hung (`broken`): the connection is kept only when the server answered with an error. */
  private failed(client: PoolClient, error: unknown, broken: boolean): void {
    this.finish();
    // A host gone or demoted: the pool's connection class has told its selector (HostSelector.poolClient);
    // a connection that does not answer it cannot see, so that is told here.
    if (error instanceof PglnTimeoutError) this.sender.hosts?.failed(client, error);
    // pg-pool listens again from the release on.
    this.sender.unguard(client);
    if (broken || !keepsConnection(error) || isReadOnly(error)) {
      // Failed, hung, ended by the server (FATAL), or on a server that refuses to write (a
      // standby): destroyed rather than reused.
      client.release(error as Error);
      destroyConnection(client);
    } else {
      // The server answered with an error (a full notification queue, say): the session lives on.
      client.release();
    }
    this.reject(error);
  }

  private finish(): void {
    this.phase = 'done';
    this.sender.deadlines.remove(this);
  }

  private noConnection(within: string, cause?: Error): PglnTimeoutError {
    const message = NOTIFY_NO_CONNECTION(this.what(), within, this.sender.pool);
    return cause ? new PglnTimeoutError(message, { cause }) : new PglnTimeoutError(message);
  }
}
