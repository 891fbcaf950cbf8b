import { PglnOverflowError, type PglnPayloadLostError } from '../errors/index.js';
import type { OutOfSyncReason, PglnNotification } from '../interfaces/index.js';
import { OVERFLOW_DROPPED, OVERFLOW_RESYNC } from '../pgln.messages.js';
import { deferred, untilAborted } from '../pgln.promises.js';
import type { SubscriptionSpec } from '../pgln.subscription.js';
import type { Channel } from './channel.js';
import { DeliveryQueue } from './delivery-queue.js';
import { transactionOf } from './exactly-once.js';
import { HandlerRun } from './handler-run.js';
import { NotificationHandler, type NotificationSpec } from './notification-handler.js';
import { OutOfSyncHandlers, type OutOfSyncSpec } from './out-of-sync-handlers.js';
import { visibleIn } from './snapshot.js';
import { merge, type SyncState } from './sync-state.js';

type Live = Extract<SyncState, { kind: 'live' }>;

/** Someone waiting for a read that begins after they asked (see {@link Subscriber.resync}). */
interface ReadWaiter {
  /** Reads begun when they asked: the read they wait for is a later one. */
  readonly after: number;
  readonly resolve: () => void;
}

/**
 * The handlers one owner has on one channel (a provider's decorated methods, or one `listen()`
 * call), and where that owner stands with the database ({@link SyncState}). A subscriber gets every
 * notification of its channel in order, one at a time (a handler's promise is awaited before its
 * next one), independently of the channel's other subscribers: a slow handler delays only its own
 * owner, and a read (its out-of-sync handlers) holds only its own owner's notifications.
 *
 * Delivery is synchronous from the socket's data event while handlers complete synchronously; a
 * handler's promise suspends it, and that promise's settlement resumes it: one promise reaction per
 * awaited handler, and no async function per notification.
 */
export class Subscriber {
  state: SyncState;
  /** Settles when it is first in sync; rejects if it is removed first. */
  readonly ready: Promise<void>;
  readonly run = new HandlerRun();
  private readonly notifications: NotificationHandler[];
  private readonly outOfSync: OutOfSyncHandlers;
  private readonly queue = new DeliveryQueue();
  /** A handler of its own runs, or a read does (waiting for its LISTEN included): notifications wait in the queue. */
  private busy = false;
  /** The notification whose handlers are being called, its position, and the next handler's index. */
  private current?: PglnNotification;
  private currentAt = 0;
  private nextHandler = 0;
  /** The handler whose promise delivery waits for. */
  private awaited?: NotificationHandler;
  /** Reads begun so far. */
  private reads = 0;
  private waiters: ReadWaiter[] = [];
  /** The channel's position when it joined: a subscriber without out-of-sync handlers gets every notification after it. */
  private readonly joinedAt: number;
  private idle?: { promise: Promise<void>; resolve: () => void };
  private settleReady!: (error?: Error) => void;
  private readonly removal = new AbortController();

  /** How logs and errors name it: its handlers, `Class.method` or `listen(channel)`. */
  readonly name: string;
  private readonly onError: SubscriptionSpec['onError'];

  constructor(
    readonly channel: Channel,
    specs: readonly SubscriptionSpec[],
    /** The reason its first read is given: `'connect'` for decorated handlers, `'listen'` for `listen()`. */
    firstReason: OutOfSyncReason,
  ) {
    const { name, context, reporting } = channel;
    this.notifications = specs
      .filter((spec): spec is NotificationSpec => !!spec.onNotification)
      .map((spec) => new NotificationHandler(spec, name, context, reporting));
    const resyncs = specs.filter((spec): spec is OutOfSyncSpec => !!spec.onOutOfSync);
    this.outOfSync = new OutOfSyncHandlers(resyncs, name, context, reporting, (run) => (channel.lastResync = run));
    this.onError = specs.find((spec) => spec.onError)?.onError;
    this.name = specs.map((spec) => spec.name).join(', ');
    this.joinedAt = channel.position;
    this.ready = new Promise<void>((resolve, reject) => {
      this.settleReady = (error) => (error ? reject(error) : resolve());
    });
    // Nobody may be waiting (decorated handlers); a rejection must not become "unhandled".
    this.ready.catch(() => undefined);
    this.state = { kind: 'due', reason: firstReason };
    // Decorated handlers must be in sync before bootstrap ends; a listen() is waited for by its caller.
    if (firstReason !== 'listen') context.sync.behind(this);
    this.busy = true;
    void this.read();
  }

  get active(): boolean {
    return this.state.kind !== 'removed';
  }

  /** Aborts once it is removed: a retry's wait ends at once, and whoever watches it learns. */
  get removed(): AbortSignal {
    return this.removal.signal;
  }

  /** Notifications waiting for it. */
  get queued(): number {
    return this.queue.length;
  }

  /** A notification arrived at `position` on its channel: delivered now if nothing of its own runs, else queued. */
  push(notification: PglnNotification, position: number): void {
    if (this.notifications.length === 0) return;
    if (!this.busy && this.state.kind === 'live') {
      // Idle and in sync: the common case when handlers keep up.
      this.busy = true;
      if (!this.deliver(notification, position, 0)) return;
      // Done at once; unless a handler asked for a read meanwhile, nothing else waits (the queue was empty).
      if (this.state.kind === 'live' && this.queue.length === 0 && !this.idle) this.busy = false;
      else this.pump();
      return;
    }
    if (this.state.kind === 'removed') return;
    // A read is due: it begins after this arrived, so it covers it; nothing to hold (however long it waits for its slot).
    if (this.state.kind === 'due' && this.outOfSync.length > 0) return;
    this.queue.push(notification, position);
    if (this.queue.length > this.channel.context.maxQueuedNotifications) this.overflow();
  }

  /**
   * Notifications up to `position` will never come: their large payloads are lost, or too many
   * waited behind a fetch. A read that covers them already (it began after they arrived) or is due
   * (it will) makes up for them; else it reads again. A lost payload is told to its error path
   * either way; an overflow, as its own queue's, only when there is no out-of-sync handler.
   */
  missed(position: number, error: PglnPayloadLostError | PglnOverflowError): void {
    const { state } = this;
    if (this.notifications.length === 0 || state.kind === 'removed') return;
    const resyncs = this.outOfSync.length > 0;
    // A due read covers what arrived before it begins; without out-of-sync handlers there is no read: only what came before it joined.
    const covered = state.kind === 'due' ? resyncs || position <= this.joinedAt : position <= state.upTo;
    if (covered) return;
    this.channel.reporting.count('dropped', error instanceof PglnOverflowError ? error.dropped : error.lost);
    if (!resyncs || !(error instanceof PglnOverflowError)) this.channel.reporting.report(this.name, this.onError, error);
    if (resyncs) this.due('overflow');
  }

  /**
   * The LISTEN of `epoch` is (being) sent on a new connection: a read that followed an older LISTEN
   * may have missed what was committed while no connection listened.
   */
  listening(epoch: number): void {
    const { state } = this;
    if (state.kind === 'reading' && state.epoch < epoch) state.again = merge(state.again, 'reconnect');
    else if (state.kind === 'due' && state.epoch !== undefined && state.epoch < epoch) this.due('reconnect');
    else if (state.kind === 'live' && state.epoch < epoch && this.outOfSync.length > 0) this.due('reconnect');
  }

  /**
   * Reads again (reason `'manual'`), as after a reconnect. Resolves once a read that began after
   * this call has completed, or once it is removed (there is nothing left to bring in sync).
   */
  resync(): Promise<void> {
    if (this.outOfSync.length === 0 || !this.active) return Promise.resolve();
    const done = new Promise<void>((resolve) => this.waiters.push({ after: this.reads, resolve }));
    this.due('manual');
    return done;
  }

  /**
   * Removes it: none of its handlers is called again (one running finishes on its own), its
   * `ready` rejects with `error`, and pending {@link resync} calls resolve.
   */
  remove(error: Error): void {
    if (!this.active) return;
    this.state = { kind: 'removed' };
    this.queue.clear();
    this.current = undefined;
    this.channel.context.sync.caughtUp(this);
    this.settleReady(error);
    for (const waiter of this.waiters.splice(0)) waiter.resolve();
    this.removal.abort();
  }

  /** Resolves when none of its handlers runs any more. */
  settled(): Promise<void> {
    if (!this.busy) return Promise.resolve();
    this.idle ??= deferred();
    return this.idle.promise;
  }

  /** A read is due for `reason`. */
  private due(reason: OutOfSyncReason): void {
    const { state } = this;
    if (state.kind === 'due') {
      this.state = { ...state, reason: merge(state.reason, reason) };
    } else if (state.kind === 'reading') {
      state.again = merge(state.again, reason);
    } else if (state.kind === 'live') {
      this.state = { kind: 'due', reason, epoch: state.epoch };
      this.channel.context.sync.behind(this);
      if (!this.busy) {
        this.busy = true;
        this.pump();
      }
    }
  }

  /**
   * Does its work in order for as long as handlers complete synchronously: the rest of the
   * notification in progress, a due read, then the queue. Called with `busy` set; clears it when
   * there is nothing left.
   */
  private pump(): void {
    for (;;) {
      if (this.current !== undefined) {
        if (!this.deliver(this.current, this.currentAt, this.nextHandler)) return;
        this.current = undefined;
      }
      const { state } = this;
      if (state.kind === 'due') return void this.read();
      if (state.kind !== 'live' || this.queue.length === 0) return this.rest();
      const position = this.queue.nextPosition;
      if (!this.deliver(this.queue.shift(), position, 0)) return;
    }
  }

  /**
   * Calls its notification handlers, from index `from`, with the notification at `position`.
   * Returns false when one returned a promise: delivery is suspended, to go on from the next handler
   * once it settles.
   */
  private deliver(notification: PglnNotification, position: number, from: number): boolean {
    const { state } = this;
    // Its latest read began after this one arrived, so it saw it: not delivered after it (see SyncState).
    if (state.kind !== 'live' || position <= state.upTo) return true;
    if (from === 0 && state.snapshot && this.seenBy(state, notification)) return true;
    const handlers = this.notifications;
    for (let i = from; i < handlers.length && this.state.kind !== 'removed'; i++) {
      const handler = handlers[i]!;
      const result = handler.call(notification, this);
      if (result) {
        this.current = notification;
        this.currentAt = position;
        this.nextHandler = i + 1;
        this.run.start(handler.name);
        this.awaited = handler;
        // A native promise is used as it is: its own reaction is the only hop.
        Promise.resolve(result).then(this.handled, this.failed);
        return false;
      }
    }
    return true;
  }

  private readonly handled = (value: unknown): void => {
    this.awaited!.settled(value);
    this.run.finish(this.channel);
    this.pump();
  };

  private readonly failed = (error: unknown): void => {
    this.awaited!.failed(error);
    this.run.finish(this.channel);
    this.pump();
  };

  /**
   * Whether its last read's snapshot saw the transaction that sent `notification`: then it is
   * skipped (that read applied it). Notifications come in commit order, so the first one the
   * snapshot did not see ends the skipping for good. One without a transaction id tells nothing.
   */
  private seenBy(state: Live, notification: PglnNotification): boolean {
    const xid = transactionOf(notification.payload);
    if (xid === undefined) return false;
    if (visibleIn(xid, state.snapshot!)) {
      this.channel.reporting.count('skippedBySnapshot');
      return true;
    }
    state.snapshot = undefined;
    return false;
  }

  /**
   * Reads until it is in sync, from the `due` state: waits for the LISTEN of the current (or next)
   * connection and for what the `resync` options ask (a jitter, a fleet's slot), then runs its
   * out-of-sync handlers (told the due state's reason as it is then), and again if a newer cause
   * came meanwhile. While it waits it stays `due`: what arrives is not queued, as the read that
   * follows covers it (a lost connection only changes the reason). A slot is not held through a
   * reconnect. Runs with `busy` set, and goes on delivering when done.
   */
  private async read(): Promise<void> {
    const { channel, removal } = this;
    /** What to call when the read that holds the slot is done; undefined until it has one. */
    let leave: (() => void) | undefined;
    try {
      while (this.state.kind === 'due') {
        const listen = await channel.nextListen(removal.signal);
        if (!listen) return; // removed
        // False: that connection died before its LISTEN ran; the next one's is waited for.
        if (!(await untilAborted(listen.ran, removal.signal))) continue;
        if (this.state.kind !== 'due') return; // removed meanwhile
        if (!leave) {
          leave = await this.outOfSync.enter(this.state.reason, removal.signal);
          if (!leave) return; // removed while waiting
          // Its connection was lost meanwhile: the slot is not held through a reconnect; the next LISTEN is waited for, then the gate again (its jitter too).
          if (!channel.isCurrent(listen)) {
            leave();
            leave = undefined;
          }
          continue; // the LISTEN it follows is looked up again
        }
        const { reason } = this.state;
        // Every notification that arrived by now was committed before the read begins: it sees them.
        // Without out-of-sync handlers there is no read: it gets everything from when it joined.
        const upTo = this.outOfSync.length > 0 ? channel.position : this.joinedAt;
        this.queue.dropUpTo(upTo);
        const state: Extract<SyncState, { kind: 'reading' }> = { kind: 'reading', reason, epoch: listen.epoch, upTo };
        this.state = state;
        this.reads++;
        const result = await this.outOfSync.run(reason, removal.signal, this.run);
        leave();
        leave = undefined;
        if (!result || !this.active) return;
        this.state = state.again
          ? { kind: 'due', reason: state.again, epoch: listen.epoch }
          : { kind: 'live', epoch: listen.epoch, upTo, snapshot: result.snapshot };
      }
      if (this.state.kind === 'live') this.inSync();
    } finally {
      leave?.();
      if (this.active) this.pump();
      else this.rest();
    }
  }

  /** It has just read: whoever waited for that read is released. */
  private inSync(): void {
    this.channel.context.sync.caughtUp(this);
    this.settleReady();
    this.waiters = this.waiters.filter((waiter) => {
      if (waiter.after >= this.reads) return true;
      waiter.resolve();
      return false;
    });
  }

  /** Nothing left to do: release whoever waits for it to settle. */
  private rest(): void {
    this.busy = false;
    if (this.idle) {
      this.idle.resolve();
      this.idle = undefined;
    }
  }

  /**
   * Too many notifications wait for it: drop them. Its out-of-sync handlers cover what was dropped;
   * without one, its handlers' error path is told the count.
   */
  private overflow(): void {
    const dropped = this.queue.clear();
    this.channel.reporting.count('dropped', dropped);
    const { logger, maxQueuedNotifications } = this.channel.context;
    if (this.outOfSync.length > 0) {
      logger.warn(OVERFLOW_RESYNC(this.channel.name, this.name, dropped, maxQueuedNotifications));
      this.due('overflow');
      return;
    }
    const message = OVERFLOW_DROPPED(this.channel.name, dropped, maxQueuedNotifications, this.name);
    const error = new PglnOverflowError(message, this.channel.name, dropped);
    logger.error(error.message);
    this.channel.reporting.report(this.name, this.onError, error);
  }
}
