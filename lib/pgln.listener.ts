import type { Logger } from '@nestjs/common';
import type { Observable } from 'rxjs';
import { PglnClosedError, PglnError, PglnTimeoutError } from './errors/index.js';
import type { OutOfSyncReason, PglnState, PglnStateChange, PglnStats } from './interfaces/index.js';
import type { Channel } from './channel/channel.js';
import { createChannelContext, type ChannelContext } from './channel/channel-context.js';
import type { Subscriber } from './channel/subscriber.js';
import { Channels } from './pgln.channels.js';
import { describeError } from './pgln.connection-errors.js';
import {
  ATTEMPT_FAILED,
  CLOSED,
  NOT_LISTENING,
  RESYNC_ABANDONED,
  SPARE_FAILED,
  SPARE_SILENT,
  SPARE_TAKES_OVER,
  UNLISTENED,
} from './pgln.messages.js';
import type { ResolvedPglnOptions } from './pgln.options.js';
import { HealthCheck } from './pgln.health-check.js';
import { ListenerState } from './pgln.listener-state.js';
import { Spare } from './pgln.spare.js';
import { Startup } from './pgln.startup.js';
import { ReconnectSchedule } from './pgln.reconnect-schedule.js';
import { ResyncGate } from './pgln.resync-gate.js';
import type { PglnTransport, Session } from './pgln.transport.js';
import { StaleBackends } from './pgln.stale-backends.js';
import type { SubscriptionSpec } from './pgln.subscription.js';
import type { Telemetry } from './pgln.telemetry.js';

const noop = () => undefined;

/**
 * Owns the LISTEN session and every channel. The connection's life is a state machine whose
 * transitions all go through {@link ListenerState.transition}:
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
  private readonly channels: Channels;
  private readonly context: ChannelContext;
  private readonly states: ListenerState;
  /** The connected LISTEN session, if any. */
  private session?: Session;
  /** A session whose connect() is in flight. */
  private connecting?: Session;
  /** When the next connection attempt runs. */
  private readonly schedule: ReconnectSchedule;
  /** The spare session, with `listener: { spare: true }`. */
  private readonly spare?: Spare;
  /**
   * A spare LISTENing in place of a lost session, until its LISTEN ran: `wasLive` of the session it
   * replaced, and the timer that gives it up if it does not answer in time.
   */
  private promoted?: { session: Session; wasLive: boolean; timer: NodeJS.Timeout };
  private readonly health: HealthCheck;
  /** The first connection, which `start()` waits for. */
  private readonly startup: Startup;
  private watchdog?: NodeJS.Timeout;
  /** True once a LISTEN has succeeded: later connections are reconnects. */
  private listenedBefore = false;
  private started?: Promise<void>;
  private closing?: Promise<void>;
  /** Backends of lost sessions, terminated once a new one is live if they are still there. */
  private readonly stale: StaleBackends;
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
    /** Where references to large payloads are fetched (`largePayloads`). */
    payloads?: ChannelContext['payloads'],
  ) {
    const listener = this;
    const gate = ResyncGate.of(options, name, transport, logger);
    this.context = createChannelContext(options, logger, {
      behind: (subscriber) => {
        this.behind.add(subscriber as Subscriber);
        this.settleState();
      },
      caughtUp: (subscriber) => {
        if (this.behind.delete(subscriber as Subscriber)) this.settleState();
      },
    }, gate, payloads);
    this.channels = new Channels(this.context);
    this.health = new HealthCheck(options.healthCheck, logger, {
      get session() {
        return listener.session;
      },
      wants: (name) => this.channels.has(name),
      channels: () => this.channels.names(),
      lost: (session, error) => this.lost(session, error),
    });
    this.stale = new StaleBackends(logger);
    this.states = new ListenerState(logger);
    this.schedule = new ReconnectSchedule(this.context.backoff, () => this.connect());
    if (options.connection?.spare) {
      const events = { notification: this.channels.dispatch, lost: this.lost };
      this.spare = new Spare(() => transport.session(events, { spare: true }), options.healthCheck.intervalMs);
    }
    this.startup = new Startup(options.startupTimeoutMs, options.healthCheck.timeoutMs, transport.target, logger, (error) => void this.close('startup failed', error));
  }

  /** The connection state. */
  get state(): PglnState {
    return this.states.value;
  }

  /** The current state, then every transition; completes after `'closed'`. */
  get state$(): Observable<PglnStateChange> {
    return this.states.changes;
  }

  /** Spans and duration histograms for every channel's handlers, from now on. */
  set telemetry(telemetry: Telemetry | undefined) {
    // Loaded after shutdown began: nothing to report any more.
    if (this.closing) telemetry?.close();
    else this.context.telemetry = telemetry;
  }

  /** A snapshot: the state, counts in total and per channel, and what the health check last measured. */
  stats(): PglnStats {
    const { channels, queued } = this.channels.stats();
    return {
      name: this.name,
      state: this.states.value,
      since: this.states.since,
      notLiveSince: this.states.notLiveSince,
      ...this.context.totals.snapshot(),
      reconnects: this.reconnects,
      waitingForResyncSlot: this.context.gate?.waiting ?? 0,
      queued,
      notificationQueueUsage: this.health.queueUsage.last,
      lastHealthCheck: this.health.last,
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
    if (!this.started) {
      this.started = this.startup.begin();
      const { slowHandlerMs } = this.options;
      this.watchdog = setInterval(() => this.channels.checkSlow(Date.now(), slowHandlerMs), Math.max(10, slowHandlerMs / 4));
      this.states.transition('connecting', this.transport.target);
      this.connect();
    }
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
    const { added, fresh } = this.channels.add(entries, firstReason);
    const { session } = this;
    if (session && fresh.length > 0) this.channels.listening(fresh, { epoch: this.epoch, ran: this.listen(session, fresh) });
    return added;
  }

  /**
   * Removes one subscriber (UNLISTENing when it was its channel's last). None of its handlers is
   * called once this resolves; one already running is not waited for, so a handler may remove itself.
   */
  async unsubscribe(subscriber: Subscriber): Promise<void> {
    const { channel } = subscriber;
    if (!this.channels.holds(subscriber)) return;
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
  settled(name?: string): Promise<void> {
    return this.channels.settled(name);
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
    void this.channels.forget(channel, new PglnError(UNLISTENED(channel.name)));
    // Failing is the session's own business: one that does not answer in time is replaced.
    await this.session?.unlisten(channel.name).catch(noop);
  }

  private connect(): void {
    const session = this.transport.session({
      notification: this.channels.dispatch,
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
    const channels = this.channels.all();
    const ran = this.listen(session, channels);
    // Before any notification can arrive: a subscriber whose last read followed an older LISTEN reads again.
    this.channels.listening(channels, { epoch, ran });
    void ran.then((ok) => {
      if (!ok || this.session !== session || this.closing) return;
      if (this.promoted?.session === session) {
        clearTimeout(this.promoted.timer);
        this.promoted = undefined;
      }
      this.transport.live?.(session);
      if (this.listenedBefore) this.reconnects++;
      this.listenedBefore = true;
      this.startup.listening();
      const where = session.server ? ` at ${session.server}` : '';
      this.states.transition('syncing', `listening on ${this.channels.size} channel(s)${where}, running out-of-sync handlers`);
      this.health.watch(session);
      if (!this.startup.receivesChecked) void this.startup.checkReceives(session, () => this.session, this.shutdownSignal.signal).then(() => this.settleState());
      this.settleState();
    });
  }

  /**
   * Goes `live` once LISTEN has run on the session, the first one proved it hears others, and no
   * subscriber is behind; back to `syncing` when one falls behind.
   */
  private settleState(): void {
    if (this.closing || !this.session) return;
    if (this.state === 'syncing' && this.behind.size === 0 && this.startup.receivesChecked) {
      this.schedule.live();
      this.states.transition('live', `${this.channels.size} channel(s) in sync`);
      this.startup.live();
      this.spare?.fill();
      void this.stale.terminate(this.session);
    } else if (this.state === 'live' && this.behind.size > 0) {
      const [first] = this.behind;
      const reason = first!.state.kind === 'due' || first!.state.kind === 'reading' ? first!.state.reason : 'manual';
      this.states.transition('syncing', `${first!.name} on ${JSON.stringify(first!.channel.name)} resyncs (${reason})`);
    }
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
        for (const [name, error] of refused) this.channels.refuse(name, error);
        return true;
      },
      (error: Error) => {
        this.lost(session, error);
        return false;
      },
    );
  }

  private connectFailed(error: Error): void {
    this.connecting = undefined;
    if (!this.closing) this.retry(error);
  }

  /** The session can no longer be trusted (error, end, timeout, failed LISTEN): replace it, once. */
  private readonly lost = (session: Session, error?: Error): void => {
    // A spare lost before it was used: its backend, if still there, goes with the next live session's stale ones.
    if (this.spare?.lost(session)) return this.stale.remember(session.identity);
    if (session !== this.session) return;
    this.session = undefined;
    this.transport.live?.(undefined);
    this.health.stop();
    session.destroy();
    this.stale.remember(session.identity);
    if (this.closing) return;
    this.channels.disconnected();
    if (this.state === 'syncing' || this.state === 'live') {
      const wasLive = this.state === 'live';
      this.startup.lost();
      this.states.transition('reconnecting', `connection lost: ${error ? describeError(error) : 'the server closed it'}`);
      // A spare LISTENs at once where a new connection would be made at once (after a stable one).
      const taken = this.schedule.stable(wasLive) ? this.spare?.take(this.options.healthCheck.timeoutMs) : undefined;
      if (!taken) return this.schedule.lost(wasLive);
      this.logger.log(SPARE_TAKES_OVER());
      const { session: spare, answerWithinMs } = taken;
      // One that died unnoticed since its last check must not hold recovery up.
      // Checked once the sockets were read (after a stall of the event loop, its answer may be there, unread).
      const silent = () => this.promoted?.session === spare && this.lost(spare, new PglnTimeoutError(SPARE_SILENT(answerWithinMs)));
      const timer = setTimeout(() => setImmediate(silent), answerWithinMs);
      this.promoted = { session: spare, wasLive, timer };
      this.connected(spare);
    } else if (this.promoted?.session === session) {
      // The spare failed or did not answer when used: a new connection, as without one.
      const { wasLive, timer } = this.promoted;
      clearTimeout(timer);
      this.promoted = undefined;
      this.logger.warn(SPARE_FAILED(error ? describeError(error) : 'the server closed it'));
      this.schedule.lost(wasLive);
    } else {
      // Connected, but LISTEN failed (a standby in recovery, say): one more failed attempt.
      this.retry(error ?? new Error('the server closed the connection'));
    }
  };

  /** Schedules the next attempt after a failed one, logging one line; while starting, gives up on errors retrying cannot fix. */
  private retry(error: unknown): void {
    if (this.startup.attemptFailed(error)) return;
    const { delayMs, failures } = this.schedule.failed();
    this.logger.warn(ATTEMPT_FAILED(this.transport.target, failures, describeError(error), delayMs));
  }

  private async shutdown(reason: string, cause?: Error): Promise<void> {
    this.shutdownSignal.abort();
    const spareClosed = this.spare?.close();
    clearTimeout(this.promoted?.timer);
    this.context.gate?.close();
    this.schedule.stop();
    this.health.stop();
    clearInterval(this.watchdog);
    this.states.transition('closed', reason);
    const error = cause ?? new PglnClosedError(CLOSED('finish starting'));
    this.startup.stop(error);
    await this.channels.closeAll(error, this.options.shutdownTimeoutMs);
    const { session, connecting } = this;
    this.session = undefined;
    // A pool that followed it (createMultiHostPool's) chooses its hosts on its own again.
    this.transport.live?.(undefined);
    connecting?.destroy();
    this.health.stop();
    await Promise.allSettled([session?.close(), spareClosed]);
    // Its observable instruments stop reading these stats (after a failed startup too).
    this.context.telemetry?.close();
    this.states.complete();
  }
}
