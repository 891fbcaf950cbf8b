import type { Logger } from '@nestjs/common';
import pg from 'pg';
import type { Client, Notification, QueryResult, QueryResultRow } from 'pg';
import { BehaviorSubject, type Observable } from 'rxjs';
import { PglnClosedError, PglnConnectionError, PglnError, PglnTimeoutError } from './errors/index.js';
import type { OutOfSyncReason, PglnNotification, PglnState, PglnStateChange } from './interfaces/index.js';
import { Backoff } from './pgln.backoff.js';
import { Channel, type ChannelContext } from './pgln.channel.js';
import { describeError, isFatalAtStartup } from './pgln.connection-errors.js';
import {
  ATTEMPT_FAILED,
  CHANNELS_MISSING,
  CLOSED,
  NO_ANSWER,
  SLOW_SYNC_HANDLERS,
  STARTUP_FATAL,
  STARTUP_UNREACHABLE,
  UNLISTENED,
} from './pgln.messages.js';
import type { ResolvedPglnOptions } from './pgln.options.js';
import { Subscription, type SubscriptionSpec } from './pgln.subscription.js';
import { withTimeout } from './pgln.timeout.js';
import { TurnTimer } from './pgln.turn-timer.js';

const noop = () => undefined;

/** A connection live for at least this long counts as stable: losing it, the first attempt is immediate. */
const STABLE_AFTER_MS = 1_000;

/**
 * Drops a connection for good. `end()` alone waits for the server to close a connection that
 * runs no query, which a half-open socket never does: the socket is destroyed as well.
 */
function destroy(client: Client): void {
  client.end().catch(noop);
  (client as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
}

/**
 * Owns the one LISTEN connection and every channel. The connection's life is a state machine
 * whose transitions all go through {@link PglnListener.transition}:
 *
 *   idle -> connecting -> syncing -> live -> reconnecting -> syncing -> live ... -> closed
 *
 * `syncing` starts once LISTEN has run: on every (re)connect a resync is queued on each channel
 * *before* LISTEN is sent, so whatever arrives after LISTEN is held behind the out-of-sync
 * handlers and delivered after them. While connected, a health check asks the session for
 * `pg_listening_channels()`; no answer in time, or a channel missing, replaces the connection.
 */
export class PglnListener {
  private readonly channels = new Map<string, Channel>();
  private readonly context: ChannelContext;
  private readonly states: BehaviorSubject<PglnStateChange>;
  /** The connected LISTEN session, if any. */
  private client?: Client;
  /** A client whose connect() is in flight. */
  private connecting?: Client;
  /** Cancels the scheduled connection attempt, if any. */
  private cancelRetry?: () => void;
  private healthTimer?: NodeJS.Timeout;
  private startupTimer?: NodeJS.Timeout;
  private watchdog?: NodeJS.Timeout;
  private attempt = 0;
  /** True once a LISTEN has succeeded: later connections are reconnects. */
  private listenedBefore = false;
  private lastError?: unknown;
  private started?: Promise<void>;
  private firstLive?: { resolve: () => void; reject: (error: Error) => void };
  private closing?: Promise<void>;
  /** The last query sent on the LISTEN session: each waits for the one before (see {@link query}). */
  private tail: Promise<unknown> = Promise.resolve();
  /** When the connection last went live, to tell a stable connection from one that keeps dropping. */
  private liveSince = 0;

  constructor(
    private readonly options: ResolvedPglnOptions,
    private readonly logger: Logger,
  ) {
    this.context = {
      logger,
      backoff: new Backoff(options.backoff),
      maxQueuedNotifications: options.maxQueuedNotifications,
      turns: new TurnTimer(options.slowHandlerMs, (elapsed, handlers) =>
        logger.warn(SLOW_SYNC_HANDLERS(handlers, elapsed, options.slowHandlerMs)),
      ),
    };
    this.states = new BehaviorSubject<PglnStateChange>({
      state: 'idle',
      previous: 'idle',
      detail: 'created',
      at: new Date(),
    });
  }

  /** The connection state. */
  get state(): PglnState {
    return this.states.value.state;
  }

  /** The current state, then every transition; completes after `'closed'`. */
  get state$(): Observable<PglnStateChange> {
    return this.states.asObservable();
  }

  /**
   * Starts connecting, once; every call returns the same promise, which resolves when the first
   * connection is live (its channels in sync) and rejects if startup fails or the listener is
   * closed before that.
   */
  start(): Promise<void> {
    if (this.closing) return Promise.reject(new PglnClosedError(CLOSED('start listening')));
    this.started ??= new Promise<void>((resolve, reject) => {
      this.firstLive = { resolve, reject };
      this.armStartupTimer();
      const { slowHandlerMs } = this.options;
      this.watchdog = setInterval(() => this.checkSlowHandlers(), Math.max(10, slowHandlerMs / 4));
      this.transition('connecting', this.options.target);
      this.connect();
    });
    return this.started;
  }

  /**
   * Registers handlers. When connected, new channels are LISTENed at once (in one round trip) and
   * each subscription's first resync is queued; otherwise the next connection takes care of both.
   */
  subscribe(
    entries: readonly { channel: string; spec: SubscriptionSpec }[],
    firstReason: OutOfSyncReason,
  ): Subscription[] {
    if (this.closing) throw new PglnClosedError(CLOSED(`listen on "${entries[0]?.channel}"`));
    const fresh: Channel[] = [];
    const added = entries.map(({ channel, spec }) => {
      const subscription = new Subscription(channel, spec, firstReason);
      let target = this.channels.get(channel);
      if (!target) {
        target = new Channel(channel, this.context);
        this.channels.set(channel, target);
        fresh.push(target);
      }
      target.add(subscription);
      return subscription;
    });
    const { client } = this;
    if (client) {
      const listened = this.listen(client, fresh);
      for (const subscription of added) {
        const target = this.channels.get(subscription.channel)!;
        target.sync('listen', fresh.includes(target) ? listened : target.listened, [subscription]);
      }
    }
    return added;
  }

  /**
   * Removes one subscription (UNLISTENing when it was its channel's last). None of its handlers
   * is called once this resolves; one already running is not waited for, so a handler may
   * remove itself.
   */
  async unsubscribe(subscription: Subscription): Promise<void> {
    const channel = this.channels.get(subscription.channel);
    if (!subscription.active || !channel) return;
    subscription.deactivate(new PglnError(UNLISTENED(subscription.channel)));
    channel.remove(subscription);
    if (channel.subscriptions.length === 0) await this.drop(channel);
  }

  /** Removes every subscription of a channel and UNLISTENs it; same guarantee as {@link unsubscribe}. */
  async unlisten(name: string): Promise<void> {
    const channel = this.channels.get(name);
    if (!channel) return;
    for (const subscription of channel.subscriptions) subscription.deactivate(new PglnError(UNLISTENED(name)));
    await this.drop(channel);
  }

  /** Shuts down: stops timers and deliveries, waits (bounded) for running handlers, UNLISTENs, disconnects. */
  close(reason = 'application shutdown'): Promise<void> {
    this.closing ??= this.shutdown(reason);
    return this.closing;
  }

  private async drop(channel: Channel): Promise<void> {
    this.channels.delete(channel.name);
    void channel.close();
    const { client } = this;
    // A dead connection is the health check's business: a failed UNLISTEN is not an error here.
    if (client) await this.query(client, `UNLISTEN ${client.escapeIdentifier(channel.name)}`, 'UNLISTEN').catch(noop);
  }

  private readonly dispatch = (message: Notification): void => {
    this.context.turns.begin();
    // pg's own object, passed on as is (no copy on the hot path): it has channel, payload (always a
    // string, '' when none was sent) and processId, as PglnNotification says.
    this.channels.get(message.channel)?.push(message as PglnNotification);
  };

  private connect(): void {
    const client = new pg.Client(this.options.listener);
    this.connecting = client;
    client.on('error', (error) => this.lost(client, error));
    client.on('end', () => this.lost(client));
    client.on('notification', this.dispatch);
    client.connect().then(
      () => this.connected(client),
      (error: Error) => this.connectFailed(client, error),
    );
  }

  private connected(client: Client): void {
    this.connecting = undefined;
    if (this.closing) return destroy(client);
    this.client = client;
    const channels = [...this.channels.values()];
    const listened = this.listen(client, channels);
    const reason = this.listenedBefore ? 'reconnect' : 'connect';
    const markers = channels.map((channel) => channel.sync(reason, listened));
    void listened.then((ok) => {
      if (!ok || this.client !== client || this.closing) return;
      this.listenedBefore = true;
      clearTimeout(this.startupTimer);
      this.transition('syncing', `listening on ${channels.length} channel(s), running out-of-sync handlers`);
      this.scheduleHealthCheck(client);
      void Promise.all(markers.map((marker) => marker.done)).then(() => {
        // Closing resolves pending markers too: that is no reason to go live.
        if (this.client !== client || this.closing) return;
        this.liveSince = Date.now();
        this.transition('live', `${this.channels.size} channel(s) in sync`);
        this.firstLive?.resolve();
        this.firstLive = undefined;
      });
    });
  }

  /**
   * LISTENs on `channels` in one round trip. Resolves true once it ran; false if it failed or
   * timed out, in which case the connection is replaced: the session must hold every wanted
   * channel. Callers queue their resyncs on the result before any notification can arrive.
   */
  private listen(client: Client, channels: Channel[]): Promise<boolean> {
    if (channels.length === 0) return Promise.resolve(true);
    const sql = channels.map((channel) => `LISTEN ${client.escapeIdentifier(channel.name)}`).join('; ');
    return this.query(client, sql, 'LISTEN').then(
      () => true,
      (error: Error) => {
        this.lost(client, error);
        return false;
      },
    );
  }

  private scheduleHealthCheck(client: Client): void {
    this.healthTimer = setTimeout(() => void this.checkHealth(client), this.options.healthCheck.intervalMs);
  }

  /** Asks the session which channels it listens on; replaces it if it does not answer in time or lost one. */
  private async checkHealth(client: Client): Promise<void> {
    if (client !== this.client) return;
    const expected = [...this.channels.keys()];
    try {
      const { rows } = await this.query<{ channel: string }>(
        client,
        'SELECT pg_listening_channels() AS channel',
        'Health check',
      );
      const held = new Set(rows.map((row) => row.channel));
      // A channel unlistened meanwhile is no longer wanted.
      const missing = expected.filter((name) => !held.has(name) && this.channels.has(name));
      if (missing.length > 0) throw new Error(CHANNELS_MISSING(missing));
    } catch (error) {
      this.lost(client, error as Error);
      return;
    }
    if (client === this.client) this.scheduleHealthCheck(client);
  }

  /**
   * Runs `sql` on the LISTEN session once the queries sent before it are done (pg 8 warns about
   * queueing queries on a busy client, pg 9 will not queue them), failing with a
   * {@link PglnTimeoutError} if it gets no answer within `healthCheck.timeoutMs` of being sent.
   */
  private query<R extends QueryResultRow = QueryResultRow>(client: Client, sql: string, what: string): Promise<QueryResult<R>> {
    const { timeoutMs } = this.options.healthCheck;
    const send = () => withTimeout(client.query<R>(sql), timeoutMs, () => new PglnTimeoutError(NO_ANSWER(what, timeoutMs)));
    const result = this.tail.then(send, send);
    this.tail = result.catch(noop);
    return result;
  }

  private connectFailed(client: Client, error: Error): void {
    this.connecting = undefined;
    destroy(client);
    if (!this.closing) this.retry(error);
  }

  /** The session can no longer be trusted (error, end, timeout, failed LISTEN): replace it, once. */
  private lost(client: Client, error?: Error): void {
    if (client !== this.client) return;
    this.client = undefined;
    clearTimeout(this.healthTimer);
    client.removeListener('notification', this.dispatch);
    destroy(client);
    if (this.closing) return;
    if (this.state === 'syncing' || this.state === 'live') {
      // The first attempt after losing a connection that was stable is immediate; one that keeps
      // dropping right after going live backs off like any failed attempt.
      if (this.state === 'live' && Date.now() - this.liveSince >= STABLE_AFTER_MS) this.attempt = 0;
      // Still starting: a new window of startupTimeoutMs to get back (a slow out-of-sync handler does not count).
      if (this.firstLive) this.armStartupTimer();
      this.transition('reconnecting', `connection lost: ${error ? describeError(error) : 'the server closed it'}`);
      this.scheduleConnect();
    } else {
      // Connected, but LISTEN failed (a standby in recovery, say): one more failed attempt.
      this.retry(error ?? new Error('the server closed the connection'));
    }
  }

  /** Schedules the next attempt after a failed one, logging one line; while starting, gives up on errors retrying cannot fix. */
  private retry(error: unknown): void {
    this.lastError = error;
    if (this.firstLive && isFatalAtStartup(error)) {
      return this.failStart(
        new PglnConnectionError(STARTUP_FATAL(this.options.target, describeError(error)), this.options.target, { cause: error }),
      );
    }
    const delay = this.scheduleConnect();
    this.logger.warn(ATTEMPT_FAILED(this.options.target, this.attempt, describeError(error), delay));
  }

  private scheduleConnect(): number {
    const delay = this.context.backoff.delay(this.attempt++);
    if (delay === 0) {
      // Immediate means now: even setImmediate would queue behind every other I/O callback.
      // (pg reports connection errors asynchronously, so this cannot recurse.)
      this.connect();
      return delay;
    }
    const timer = setTimeout(() => {
      this.cancelRetry = undefined;
      this.connect();
    }, delay);
    this.cancelRetry = () => clearTimeout(timer);
    return delay;
  }

  private armStartupTimer(): void {
    clearTimeout(this.startupTimer);
    this.startupTimer = setTimeout(() => this.failStart(this.unreachable()), this.options.startupTimeoutMs);
  }

  private unreachable(): PglnConnectionError {
    const { target, startupTimeoutMs } = this.options;
    const reason = this.lastError ? describeError(this.lastError) : 'no answer';
    return new PglnConnectionError(STARTUP_UNREACHABLE(target, startupTimeoutMs, reason), target, {
      cause: this.lastError,
    });
  }

  /** Startup cannot succeed: fail `start()` (and so `app.init()`) and release everything. */
  private failStart(error: PglnConnectionError): void {
    if (!this.firstLive) return;
    this.logger.error(error.message);
    this.firstLive.reject(error);
    this.firstLive = undefined;
    void this.close('startup failed');
  }

  private checkSlowHandlers(): void {
    const now = Date.now();
    for (const channel of this.channels.values()) channel.checkSlow(now, this.options.slowHandlerMs);
  }

  private transition(next: PglnState, detail: string): void {
    const previous = this.state;
    if (previous === next || previous === 'closed') return;
    this.states.next({ state: next, previous, detail, at: new Date() });
    const line = `${previous} -> ${next}: ${detail}`;
    if (next === 'reconnecting') this.logger.warn(line);
    else this.logger.log(line);
  }

  private async shutdown(reason: string): Promise<void> {
    this.cancelRetry?.();
    for (const timer of [this.healthTimer, this.startupTimer]) clearTimeout(timer);
    clearInterval(this.watchdog);
    this.transition('closed', reason);
    const closed = new PglnClosedError(CLOSED('finish starting'));
    this.firstLive?.reject(closed);
    this.firstLive = undefined;
    const channels = [...this.channels.values()];
    this.channels.clear();
    for (const channel of channels) {
      for (const subscription of channel.subscriptions) subscription.deactivate(closed);
    }
    await this.waitForHandlers(channels.map((channel) => channel.close()));
    const { client, connecting } = this;
    this.client = undefined;
    if (connecting) destroy(connecting);
    if (client) {
      clearTimeout(this.healthTimer);
      await this.query(client, 'UNLISTEN *', 'UNLISTEN').catch(noop);
      const { timeoutMs } = this.options.healthCheck;
      await withTimeout(client.end(), timeoutMs, () => new PglnTimeoutError(NO_ANSWER('Disconnect', timeoutMs))).catch(noop);
      destroy(client);
    }
    this.states.complete();
  }

  private async waitForHandlers(running: Promise<void>[]): Promise<void> {
    const { shutdownTimeoutMs } = this.options;
    try {
      await withTimeout(Promise.all(running), shutdownTimeoutMs, () => new Error('timeout'));
    } catch {
      this.logger.warn(
        `Handlers still running after shutdownTimeoutMs (${shutdownTimeoutMs} ms); closing the connection anyway`,
      );
    }
  }
}
