import type { Logger } from '@nestjs/common';
import type { Notification } from 'pg';
import { BehaviorSubject, type Observable } from 'rxjs';
import { PglnChannelError, PglnClosedError, PglnConnectionError, PglnError } from './errors/index.js';
import type { OutOfSyncReason, PglnChannelStats, PglnNotification, PglnState, PglnStateChange, PglnStats } from './interfaces/index.js';
import { Backoff } from './pgln.backoff.js';
import { Channel } from './channel/channel.js';
import type { ChannelContext } from './channel/channel-context.js';
import { Subscriber } from './channel/subscriber.js';
import { describeError, isFatalAtStartup } from './pgln.connection-errors.js';
import { Counts } from './pgln.counts.js';
import {
  ATTEMPT_FAILED,
  CHANNELS_MISSING,
  CLOSED,
  LISTEN_REFUSED,
  LISTENER_POOLED,
  NOT_LISTENING,
  PROBE_INCONCLUSIVE,
  RESYNC_ABANDONED,
  SLOW_SYNC_HANDLERS,
  STARTUP_FATAL,
  STARTUP_UNREACHABLE,
  UNLISTENED,
} from './pgln.messages.js';
import type { ResolvedPglnOptions } from './pgln.options.js';
import { QueueUsage } from './pgln.queue-usage.js';
import type { PglnTransport, Session } from './pgln.transport.js';
import { StaleBackends } from './pgln.stale-backends.js';
import type { SubscriptionSpec } from './pgln.subscription.js';
import { withTimeout } from './pgln.promises.js';
import type { Telemetry } from './pgln.telemetry.js';
import { TurnTimer } from './pgln.turn-timer.js';

const noop = () => undefined;

/** A connection live for at least this long counts as stable: losing it, the first attempt is immediate. */
const STABLE_AFTER_MS = 1_000;


/**
 * Owns the LISTEN session and every channel. The connection's life is a state machine whose
 * transitions all go through {@link PglnListener.transition}:
 *
 *   idle -> connecting -> syncing -> live -> reconnecting -> syncing -> live ... -> closed
 *
 * `syncing` starts once LISTEN has run on a new connection, `live` once every subscriber is in
 * sync (and the first connection proved it hears others): a subscriber that falls behind later (an
 * overflow, `resync()`) takes it back to `syncing` until it has read again. Each connection is an
 * epoch; its LISTEN tells every channel, whose subscribers then read again if their last read
 * followed an older one (see `lib/channel/sync-state.ts`). While connected, a health check asks the
 * session for `pg_listening_channels()`; no answer in time, or a channel missing, replaces the
 * session. The session's own queries live in {@link Session}.
 */
export class PglnListener {
  private readonly channels = new Map<string, Channel>();
  /**
   * The channel the last notification went to. Notifications come in runs on one channel, and pg
   * parses each channel name into a new string, which a `Map` must hash: comparing it with the
   * last name is several times cheaper. Cleared when that channel is dropped.
   */
  private lastChannel?: Channel;
  private readonly context: ChannelContext;
  private readonly states: BehaviorSubject<PglnStateChange>;
  /** The connected LISTEN session, if any. */
  private session?: Session;
  /** A session whose connect() is in flight. */
  private connecting?: Session;
  /** Cancels the scheduled connection attempt, if any. */
  private cancelRetry?: () => void;
  private healthTimer?: NodeJS.Timeout;
  private startupTimer?: NodeJS.Timeout;
  private watchdog?: NodeJS.Timeout;
  /** Backoff step of the next connection attempt. */
  private attempt = 0;
  /** Attempts that failed since the connection was last live, for logs. */
  private failedAttempts = 0;
  /** True once a LISTEN has succeeded: later connections are reconnects. */
  private listenedBefore = false;
  private lastError?: unknown;
  private started?: Promise<void>;
  private firstLive?: { resolve: () => void; reject: (error: Error) => void };
  private closing?: Promise<void>;
  /** When the connection last went live, to tell a stable connection from one that keeps dropping. */
  private liveSince = 0;
  /** When the listener stopped being live (or was created); undefined while live. */
  private notLiveSince?: Date = new Date();
  /** Backends of lost sessions, terminated once a new one is live if they are still there. */
  private readonly stale: StaleBackends;
  /** Whether a probe proved something about the LISTEN sessions hearing other connections (see {@link checkReceives}). */
  private receivesChecked = false;
  private readonly queueUsage: QueueUsage;
  private lastHealthCheck?: { at: Date; roundTripMs: number };
  private reconnects = 0;
  /** Numbers the connections (see {@link Channel.listening}). */
  private epoch = 0;
  /** Subscribers that must be in sync before the listener is live, and are not (see {@link ChannelContext.sync}). */
  private readonly behind = new Set<Subscriber>();
  /** Aborted when shutdown begins: what runs beside the session (the startup probe's connection) stops at once. */
  private readonly shutdownSignal = new AbortController();

  constructor(
    /** The instance's name, for stats. */
    private readonly name: string,
    private readonly options: ResolvedPglnOptions,
    /** How it reaches PostgreSQL: its sessions come from there. */
    private readonly transport: PglnTransport,
    private readonly logger: Logger,
  ) {
    this.context = {
      logger,
      backoff: new Backoff(options.backoff),
      maxQueuedNotifications: options.maxQueuedNotifications,
      totals: new Counts(),
      turns: new TurnTimer(options.slowHandlerMs, (elapsed, handlers) =>
        logger.warn(SLOW_SYNC_HANDLERS(handlers, elapsed, options.slowHandlerMs)),
      ),
      caseHinted: new Set(),
      sync: {
        behind: (subscriber) => {
          this.behind.add(subscriber as Subscriber);
          this.settleState();
        },
        caughtUp: (subscriber) => {
          if (this.behind.delete(subscriber as Subscriber)) this.settleState();
        },
      },
    };
    this.queueUsage = new QueueUsage(options.healthCheck.queueUsageWarning, logger);
    this.stale = new StaleBackends(logger);
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

  /** Spans and duration histograms for every channel's handlers, from now on. */
  set telemetry(telemetry: Telemetry | undefined) {
    // Loaded after shutdown began: nothing to report any more.
    if (this.closing) telemetry?.close();
    else this.context.telemetry = telemetry;
  }

  /** A snapshot: the state, counts in total and per channel, and what the health check last measured. */
  stats(): PglnStats {
    const { state, at } = this.states.value;
    const channels: Record<string, PglnChannelStats> = {};
    let queued = 0;
    for (const channel of this.channels.values()) {
      const depth = channel.depth;
      queued += depth;
      channels[channel.name] = {
        ...channel.counts.snapshot(),
        subscriptions: channel.subscribers.length,
        queued: depth,
        inSync: channel.inSync,
        lastResync: channel.lastResync,
      };
    }
    return {
      name: this.name,
      state,
      since: at,
      notLiveSince: this.notLiveSince,
      ...this.context.totals.snapshot(),
      reconnects: this.reconnects,
      queued,
      notificationQueueUsage: this.queueUsage.last,
      lastHealthCheck: this.lastHealthCheck,
      channels,
    };
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
      this.transition('connecting', this.transport.target);
      this.connect();
    });
    return this.started;
  }

  /**
   * Registers handlers: the registrations of one owner on one channel make one subscriber, whose
   * first read is given `firstReason`. When connected, new channels are LISTENed at once, in one
   * round trip; otherwise the next connection LISTENs. Each subscriber reads once LISTEN has run,
   * on its own, so a `listen()` made from a handler of the same channel never waits for it.
   */
  subscribe(entries: readonly { channel: string; spec: SubscriptionSpec }[], firstReason: OutOfSyncReason): Subscriber[] {
    if (this.closing) throw new PglnClosedError(CLOSED(`listen on "${entries[0]?.channel}"`));
    // Channel, then owner, in registration order.
    const groups = new Map<string, Map<object, SubscriptionSpec[]>>();
    for (const { channel, spec } of entries) {
      const owners = groups.get(channel) ?? groups.set(channel, new Map()).get(channel)!;
      owners.set(spec.owner, [...(owners.get(spec.owner) ?? []), spec]);
    }
    const fresh: Channel[] = [];
    const added: Subscriber[] = [];
    for (const [name, owners] of groups) {
      let channel = this.channels.get(name);
      if (!channel) {
        channel = new Channel(name, this.context);
        this.channels.set(name, channel);
        fresh.push(channel);
      }
      for (const specs of owners.values()) {
        const subscriber = new Subscriber(channel, specs, firstReason);
        channel.add(subscriber);
        added.push(subscriber);
      }
    }
    const { session } = this;
    if (session && fresh.length > 0) {
      const ran = this.listen(session, fresh);
      for (const channel of fresh) channel.listening({ epoch: this.epoch, ran });
    }
    return added;
  }

  /**
   * Removes one subscriber (UNLISTENing when it was its channel's last). None of its handlers is
   * called once this resolves; one already running is not waited for, so a handler may remove itself.
   */
  async unsubscribe(subscriber: Subscriber): Promise<void> {
    const { channel } = subscriber;
    if (!subscriber.active || this.channels.get(channel.name) !== channel) return;
    subscriber.remove(new PglnError(UNLISTENED(channel.name)));
    channel.remove(subscriber);
    if (channel.subscribers.length === 0) await this.drop(channel);
  }

  /** Removes every subscriber of a channel and UNLISTENs it; same guarantee as {@link unsubscribe}. */
  async unlisten(name: string): Promise<void> {
    const channel = this.channels.get(name);
    if (channel) await this.drop(channel);
  }

  /**
   * Runs a channel's out-of-sync handlers now (reason `'manual'`), each subscriber's notifications
   * held meanwhile; resolves once they have completed. While disconnected, they run after the next
   * connection's LISTEN.
   *
   * @throws PglnClosedError when the application shuts down first
   * @throws PglnError when nothing listens on the channel, or it is unlistened first
   */
  async resync(name: string): Promise<void> {
    if (this.closing) throw new PglnClosedError(CLOSED(`resync ${JSON.stringify(name)}`));
    const channel = this.channels.get(name);
    if (!channel) throw new PglnError(NOT_LISTENING(name));
    try {
      await channel.resync();
    } catch {
      throw this.closing ? new PglnClosedError(CLOSED(`resync ${JSON.stringify(name)}`)) : new PglnError(RESYNC_ABANDONED(name));
    }
  }

  /** Resolves once no handler of the channel (of every channel, without a name) runs or waits to run. */
  async settled(name?: string): Promise<void> {
    const channels = name === undefined ? [...this.channels.values()] : [this.channels.get(name)].filter((c) => c !== undefined);
    await Promise.all(channels.flatMap((channel) => channel.subscribers.map((subscriber) => subscriber.settled())));
  }

  /**
   * Shuts down: stops timers and deliveries, waits (bounded) for running handlers, UNLISTENs,
   * disconnects. A `listen()` still waiting for its first sync rejects with `cause` (startup's
   * error), or with a {@link PglnClosedError}.
   */
  close(reason = 'application shutdown', cause?: Error): Promise<void> {
    this.closing ??= this.shutdown(reason, cause);
    return this.closing;
  }

  private async drop(channel: Channel): Promise<void> {
    this.forget(channel, new PglnError(UNLISTENED(channel.name)));
    // Failing is the session's own business: one that does not answer in time is replaced.
    await this.session?.unlisten(channel.name).catch(noop);
  }

  /** Stops delivering to a channel, its subscribers removed with `error`, and no longer LISTENs on it on new connections. */
  private forget(channel: Channel, error: Error): void {
    this.channels.delete(channel.name);
    if (this.lastChannel === channel) this.lastChannel = undefined;
    void channel.close(error);
  }

  private readonly dispatch = (message: Notification): void => {
    this.context.turns.begin();
    let channel = this.lastChannel;
    if (channel?.name !== message.channel) {
      channel = this.lastChannel = this.channels.get(message.channel);
      if (!channel) return;
    }
    // pg's own object, passed on as is (no copy on the hot path): it has channel, payload (always a
    // string, '' when none was sent) and processId, as PglnNotification says.
    channel.push(message as PglnNotification);
  };

  private connect(): void {
    const session = this.transport.session({
      notification: this.dispatch,
      lost: this.lost,
    });
    this.connecting = session;
    session.connect().then(
      () => this.connected(session),
      (error: Error) => this.connectFailed(error),
    );
  }

  private connected(session: Session): void {
    this.connecting = undefined;
    if (this.closing) return session.destroy();
    this.session = session;
    const epoch = ++this.epoch;
    const channels = [...this.channels.values()];
    const ran = this.listen(session, channels);
    // Before any notification can arrive: a subscriber whose last read followed an older LISTEN reads again.
    for (const channel of channels) channel.listening({ epoch, ran });
    void ran.then((ok) => {
      if (!ok || this.session !== session || this.closing) return;
      if (this.listenedBefore) this.reconnects++;
      this.listenedBefore = true;
      clearTimeout(this.startupTimer);
      const where = session.server ? ` at ${session.server}` : '';
      this.transition('syncing', `listening on ${this.channels.size} channel(s)${where}, running out-of-sync handlers`);
      this.scheduleHealthCheck(session);
      if (!this.receivesChecked) void this.checkReceives(session).then(() => this.settleState());
      this.settleState();
    });
  }

  /**
   * Goes `live` once LISTEN has run on the session, the first one proved it hears others, and no
   * subscriber is behind; back to `syncing` when one falls behind.
   */
  private settleState(): void {
    if (this.closing || !this.session) return;
    if (this.state === 'syncing' && this.behind.size === 0 && this.receivesChecked) {
      this.liveSince = Date.now();
      this.failedAttempts = 0;
      this.transition('live', `${this.channels.size} channel(s) in sync`);
      this.firstLive?.resolve();
      this.firstLive = undefined;
      void this.stale.terminate(this.session);
    } else if (this.state === 'live' && this.behind.size > 0) {
      const [first] = this.behind;
      const reason = first!.state.kind === 'due' || first!.state.kind === 'reading' ? first!.state.reason : 'manual';
      this.transition('syncing', `${first!.name} on ${JSON.stringify(first!.channel.name)} resyncs (${reason})`);
    }
  }

  /**
   * Checks, once, that the LISTEN session hears notifications sent from other connections: one
   * pointed at a pooler in transaction mode (PgBouncer's `pool_mode = transaction`) LISTENs
   * without error and never hears anything. That fails startup with a `PglnConnectionError`
   * saying how to fix it; a probe that cannot be sent (the pool is down, say) proves nothing and
   * is only logged.
   */
  private async checkReceives(session: Session): Promise<void> {
    const { healthCheck } = this.options;
    const { target } = this.transport;
    const verdict = await session.probe(this.shutdownSignal.signal);
    // The session died meanwhile: the next one checks again. Otherwise, whatever it proved, no retry.
    if (this.session !== session) return;
    this.receivesChecked = true;
    if (verdict.kind === 'inconclusive') return this.logger.warn(PROBE_INCONCLUSIVE(verdict.reason));
    if (verdict.kind === 'hears') return;
    const error = new PglnConnectionError(LISTENER_POOLED(target, healthCheck.timeoutMs), target);
    // Starting: startup fails. (After startup, a probe runs only if the first ones proved nothing.)
    if (this.firstLive) this.failStart(error);
    else this.logger.error(error.message);
  }

  /**
   * LISTENs on `channels`. Resolves true once it ran; false if the session failed, in which case it
   * is replaced: it must hold every wanted channel. A channel the server refuses (while the session
   * lives on) is dropped, rejecting its subscriptions, before this resolves: the others go on.
   * Callers queue their resyncs on the result before any notification can arrive.
   */
  private listen(session: Session, channels: Channel[]): Promise<boolean> {
    return session.listen(channels.map((channel) => channel.name)).then(
      (refused) => {
        for (const [name, error] of refused) this.refuse(name, error);
        return true;
      },
      (error: Error) => {
        this.lost(session, error);
        return false;
      },
    );
  }

  /** The server refused to LISTEN on a channel: its subscriptions fail with a {@link PglnChannelError}, the channel goes. */
  private refuse(name: string, cause: Error): void {
    const channel = this.channels.get(name);
    if (!channel) return;
    const handlers = channel.subscribers.map((subscriber) => subscriber.name);
    const error = new PglnChannelError(LISTEN_REFUSED(name, describeError(cause), handlers), name, { cause });
    this.logger.error(error.message);
    this.forget(channel, error);
  }

  private scheduleHealthCheck(session: Session): void {
    this.healthTimer = setTimeout(() => void this.checkHealth(session), this.options.healthCheck.intervalMs);
  }

  /** Asks the session which channels it listens on; replaces it if it does not answer in time or lost one. */
  private async checkHealth(session: Session): Promise<void> {
    if (session !== this.session) return;
    const expected = [...this.channels.keys()];
    const started = Date.now();
    try {
      const { channels: held, queueUsage } = await session.health();
      this.lastHealthCheck = { at: new Date(), roundTripMs: Date.now() - started };
      this.queueUsage.observe(queueUsage);
      // A channel unlistened meanwhile is no longer wanted.
      const missing = expected.filter((name) => !held.has(name) && this.channels.has(name));
      if (missing.length > 0) throw new Error(CHANNELS_MISSING(missing));
    } catch (error) {
      this.lost(session, error as Error);
      return;
    }
    if (session === this.session) this.scheduleHealthCheck(session);
  }

  private connectFailed(error: Error): void {
    this.connecting = undefined;
    if (!this.closing) this.retry(error);
  }

  /** The session can no longer be trusted (error, end, timeout, failed LISTEN): replace it, once. */
  private readonly lost = (session: Session, error?: Error): void => {
    if (session !== this.session) return;
    this.session = undefined;
    clearTimeout(this.healthTimer);
    session.destroy();
    this.stale.remember(session.identity);
    if (this.closing) return;
    for (const channel of this.channels.values()) channel.disconnected();
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
  };

  /** Schedules the next attempt after a failed one, logging one line; while starting, gives up on errors retrying cannot fix. */
  private retry(error: unknown): void {
    this.lastError = error;
    if (this.firstLive && isFatalAtStartup(error)) {
      return this.failStart(
        new PglnConnectionError(STARTUP_FATAL(this.transport.target, describeError(error)), this.transport.target, { cause: error }),
      );
    }
    const delay = this.scheduleConnect();
    this.logger.warn(ATTEMPT_FAILED(this.transport.target, ++this.failedAttempts, describeError(error), delay));
  }

  /** Connects after the backoff's delay for the next attempt: returns that delay. */
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
    const { startupTimeoutMs } = this.options;
    const { target } = this.transport;
    const reason = this.lastError ? describeError(this.lastError) : 'no answer';
    return new PglnConnectionError(STARTUP_UNREACHABLE(target, startupTimeoutMs, reason), target, {
      cause: this.lastError,
    });
  }

  /** Startup cannot succeed: fail `start()` (and so `app.init()`, and any `listen()` waiting) and release everything. */
  private failStart(error: PglnConnectionError): void {
    if (!this.firstLive) return;
    this.logger.error(error.message);
    this.firstLive.reject(error);
    this.firstLive = undefined;
    void this.close('startup failed', error);
  }

  private checkSlowHandlers(): void {
    const now = Date.now();
    for (const channel of this.channels.values()) channel.checkSlow(now, this.options.slowHandlerMs);
  }

  private transition(next: PglnState, detail: string): void {
    const previous = this.state;
    if (previous === next || previous === 'closed') return;
    const at = new Date();
    if (next === 'live') this.notLiveSince = undefined;
    else this.notLiveSince ??= at;
    this.states.next({ state: next, previous, detail, at });
    const line = `${previous} -> ${next}: ${detail}`;
    if (next === 'reconnecting') this.logger.warn(line);
    else this.logger.log(line);
  }

  private async shutdown(reason: string, cause?: Error): Promise<void> {
    this.shutdownSignal.abort();
    this.cancelRetry?.();
    for (const timer of [this.healthTimer, this.startupTimer]) clearTimeout(timer);
    clearInterval(this.watchdog);
    this.transition('closed', reason);
    const error = cause ?? new PglnClosedError(CLOSED('finish starting'));
    this.firstLive?.reject(error);
    this.firstLive = undefined;
    const channels = [...this.channels.values()];
    this.channels.clear();
    this.lastChannel = undefined;
    await this.waitForHandlers(channels.map((channel) => channel.close(error)));
    const { session, connecting } = this;
    this.session = undefined;
    connecting?.destroy();
    clearTimeout(this.healthTimer);
    await session?.close();
    // Its observable instruments stop reading these stats (after a failed startup too).
    this.context.telemetry?.close();
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
