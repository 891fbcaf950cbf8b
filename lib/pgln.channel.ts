import type { Logger } from '@nestjs/common';
import { PglnHandlerError, PglnOverflowError, PglnPayloadError } from './errors/index.js';
import type { OutOfSyncReason, PglnChannelStats, PglnNotification } from './interfaces/index.js';
import type { Backoff } from './pgln.backoff.js';
import { Counts } from './pgln.counts.js';
import {
  HANDLER_FAILED,
  OVERFLOW_DROPPED,
  OVERFLOW_RESYNC,
  PAYLOAD_NOT_JSON,
  SLOW_HANDLER,
  SLOW_HANDLER_DONE,
} from './pgln.messages.js';
import { isPromiseLike } from './pgln.promises.js';
import { validatePayload } from './pgln.schema.js';
import type { Telemetry } from './pgln.telemetry.js';
import type { TurnTimer } from './pgln.turn-timer.js';
import type { Subscription } from './pgln.subscription.js';

/**
 * Of two reasons to resync that one run answers, the one to tell the handler: a lost connection
 * is what it most needs to know; otherwise the earlier reason stands.
 */
function merge(current: OutOfSyncReason | undefined, next: OutOfSyncReason): OutOfSyncReason {
  return next === 'reconnect' ? next : (current ?? next);
}

/**
 * A resync request in a channel's queue. Notifications queued behind it are held until the
 * out-of-sync handlers it runs have completed; those queued before it are delivered first. A
 * channel has at most one marker waiting: a newer resync supersedes it (see {@link supersede}).
 */
export class SyncMarker {
  /** Resolves once the marker has been processed (or dropped at close). */
  readonly done: Promise<void>;
  resolve!: () => void;
  /** Whether its LISTEN ran and its subscriptions were brought in sync (not so when its connection died first). */
  ran = false;

  constructor(
    public reason: OutOfSyncReason,
    /** Resolves true once LISTEN ran on the connection this marker belongs to; false if that connection died first. */
    public listened: Promise<boolean>,
    /** The subscriptions to bring in sync: the channel's when the marker was queued. */
    public subscriptions: readonly Subscription[],
  ) {
    this.done = new Promise((resolve) => (this.resolve = resolve));
  }

  /**
   * A newer resync of the channel, before this one started: one run after the newest cause
   * covers every cause, so this marker now stands for both (and keeps its place in the queue).
   */
  supersede(reason: OutOfSyncReason, listened: Promise<boolean>, subscriptions: readonly Subscription[]): void {
    this.reason = merge(this.reason, reason);
    this.listened = listened;
    this.subscriptions = subscriptions;
  }
}

type Item = PglnNotification | SyncMarker;

/** A promise and its resolver. */
function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

/** What {@link Channel.callValidated} resolves with when the payload failed the schema: the handler was not called. */
const REJECTED = Symbol('rejected');

/** A handler in progress, for slow-handler warnings. */
interface Run {
  name?: string;
  /**
   * When the watchdog first saw it running (0 until then): no clock is read per call, which would
   * cost about as much as the rest of an async delivery. Slow-handler warnings come between
   * `slowHandlerMs` and a watchdog tick (`slowHandlerMs / 4`) later, and times are that much short.
   */
  since: number;
  warned: boolean;
}

/** What a channel needs from the listener that owns it. */
export interface ChannelContext {
  readonly logger: Logger;
  readonly backoff: Backoff;
  readonly maxQueuedNotifications: number;
  /** Reports synchronous handlers that block the event loop (see {@link TurnTimer}). */
  readonly turns: TurnTimer;
  /** Spans and duration histograms, once loaded and only when an OpenTelemetry SDK is there. */
  telemetry?: Telemetry;
  /** The instance's counts, every channel's included, even after it is dropped. */
  readonly totals: Counts;
}

/**
 * One LISTENed channel: its subscriptions and a single FIFO of notifications and sync markers,
 * processed one item at a time. Synchronous handlers are called straight from the socket's data
 * event; a promise returned by a handler is awaited before the next item.
 */
export class Channel {
  /** Replaced, never mutated, so a delivery in progress keeps a stable list. */
  subscriptions: readonly Subscription[] = [];
  /** What happened on this channel since it was created (see `PglnService.stats()`); the totals count it too. */
  readonly counts = new Counts();
  /** The last out-of-sync handler run that completed. */
  lastResync?: PglnChannelStats['lastResync'];
  /** Whether LISTEN ran for this channel on the latest connection (see {@link SyncMarker.listened}). */
  listened: Promise<boolean> = Promise.resolve(false);
  /** While there is no connection: resolves with the next connection's {@link listened}. */
  private upcoming?: Promise<{ listened: Promise<boolean> }>;
  private next?: (connection: { listened: Promise<boolean> }) => void;
  private queue: (Item | undefined)[] = [];
  private head = 0;
  /** Notifications (not markers) in the queue. */
  private queued = 0;
  /** The marker whose handlers have not started yet (at most one): queued, or waiting for its LISTEN. */
  private waiting?: SyncMarker;
  private busy = false;
  /** The notification being delivered, the subscriptions it goes to, and the next one's index (see {@link pump}). */
  private current?: PglnNotification;
  private recipients: readonly Subscription[] = [];
  private nextRecipient = 0;
  /** The subscription whose handler's promise the queue waits for. */
  private awaited?: Subscription;
  private closed = false;
  /** Called once when the channel closes: {@link resync} calls that must not wait any longer. */
  private readonly onClose = new Set<() => void>();
  private idle?: { promise: Promise<void>; resolve: () => void };
  /** The handler in progress in the queue. */
  private readonly lane: Run = { since: 0, warned: false };
  /** First syncs running beside the queue ({@link syncAlone}), each with its handler in progress. */
  private readonly side = new Map<Run, Promise<void>>();

  constructor(
    readonly name: string,
    private readonly context: ChannelContext,
  ) {
    this.disconnected();
  }

  /** LISTEN for this channel is (being) sent on a new connection: `listened` tells when it ran. */
  listening(listened: Promise<boolean>): void {
    this.listened = listened;
    this.next?.({ listened });
    this.next = this.upcoming = undefined;
  }

  /**
   * No connection: a first sync beside the queue waits for the next connection's LISTEN, and one
   * that has read the database already reads it again after that LISTEN, told `'reconnect'`.
   */
  disconnected(): void {
    this.upcoming ??= new Promise((resolve) => (this.next = resolve));
    for (const subscription of this.subscriptions) {
      if (subscription.held && !subscription.synced && subscription.readAfter) subscription.again = 'reconnect';
    }
  }

  add(subscription: Subscription): void {
    this.subscriptions = [...this.subscriptions, subscription];
  }

  remove(subscription: Subscription): void {
    this.subscriptions = this.subscriptions.filter((s) => s !== subscription);
  }

  /** Notifications waiting: in the queue, and held for subscriptions whose first sync runs. */
  get depth(): number {
    let depth = this.queued;
    for (const subscription of this.subscriptions) depth += subscription.held?.length ?? 0;
    return depth;
  }

  /** Queues a notification: delivered after everything queued before it, including resyncs. */
  push(notification: PglnNotification): void {
    if (this.closed) return;
    this.counts.received++;
    this.context.totals.received++;
    if (!this.busy) {
      // Idle means the queue is empty: deliver at once, the common case when handlers keep up.
      this.busy = true;
      if (this.deliver(notification, this.subscriptions, 0)) this.pump();
      return;
    }
    this.queue.push(notification);
    if (++this.queued > this.context.maxQueuedNotifications) this.overflow();
  }

  /**
   * Queues a resync of every subscription, to run once LISTEN has run: the one of the connection
   * whose `listened` is given, or else of the current (or next) connection. A resync already
   * waiting in the queue is superseded instead: it is the one returned.
   */
  sync(reason: OutOfSyncReason, connection?: Promise<boolean>): SyncMarker {
    if (connection) this.listening(connection);
    const listened = this.upcoming ? this.upcoming.then((next) => next.listened) : this.listened;
    if (this.waiting) {
      this.waiting.supersede(reason, listened, this.subscriptions);
      return this.waiting;
    }
    const marker = new SyncMarker(reason, listened, this.subscriptions);
    if (this.closed) {
      marker.resolve();
      return marker;
    }
    this.waiting = marker;
    this.queue.push(marker);
    if (!this.busy) {
      this.busy = true;
      this.pump();
    }
    return marker;
  }

  /**
   * Resyncs every subscription now (reason `'manual'`), as after a reconnect, even those that read
   * the database after the current LISTEN; first syncs running beside the queue run again. Resolves
   * true once all of it completed, false if it could not run (its connection died before LISTEN
   * ran, or the channel closed).
   */
  async resync(): Promise<boolean> {
    this.outdate('manual');
    const side = [...this.side.values()];
    const marker = this.sync('manual');
    if (side.length === 0) {
      await marker.done; // done at close too
    } else {
      // A first sync's handler may outlive the channel: once it is closed, it is not waited for.
      let stop!: () => void;
      const closed = new Promise<void>((resolve) => this.onClose.add((stop = resolve)));
      await Promise.race([Promise.all([marker.done, ...side]), closed]);
      this.onClose.delete(stop);
    }
    return marker.ran && !this.closed;
  }

  /**
   * Brings a subscription added to this (listening) channel in sync without waiting for the item
   * in progress, which may be a handler awaiting this very `listen()`. Until its out-of-sync
   * handler has completed, what the channel delivers is held for this subscription alone, then
   * given to it in order; from then on it receives like the others.
   */
  syncAlone(subscription: Subscription): void {
    subscription.held = [];
    // What is queued already is older than its out-of-sync handler's read, which covers it.
    subscription.skip = this.queued;
    const run: Run = { since: 0, warned: false };
    this.side.set(run, this.runAlone(subscription, run));
  }

  /** Resolves when no item is being processed and no first sync runs beside the queue. */
  settled(): Promise<void> {
    const side = [...this.side.values()];
    if (!this.busy) return side.length ? Promise.all(side).then(() => undefined) : Promise.resolve();
    this.idle ??= deferred();
    return side.length ? Promise.all([this.idle.promise, ...side]).then(() => undefined) : this.idle.promise;
  }

  /**
   * Stops the channel: queued items are dropped and no handler starts any more. Resolves when the
   * handlers in progress (if any) have finished.
   */
  close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      for (const stop of this.onClose) stop();
      this.listening(Promise.resolve(false));
      this.waiting?.resolve();
      this.waiting = undefined;
      this.queue = [];
      this.head = 0;
      this.queued = 0;
    }
    return this.settled();
  }

  /** Logs, once each, handlers that have been running for `thresholdMs` or more. */
  checkSlow(now: number, thresholdMs: number): void {
    this.checkRun(this.lane, now, thresholdMs);
    for (const run of this.side.keys()) this.checkRun(run, now, thresholdMs);
  }

  private checkRun(run: Run, now: number, thresholdMs: number): void {
    if (run.name === undefined || run.warned) return;
    if (run.since === 0) run.since = now;
    if (now - run.since < thresholdMs) return;
    run.warned = true;
    this.context.logger.warn(SLOW_HANDLER(run.name, this.name, now - run.since, thresholdMs));
  }

  /**
   * Too many notifications are waiting: drop them (a waiting resync stays). A resync covers what
   * was dropped for the owners that have an out-of-sync handler here; any other handler is told the count.
   */
  private overflow(): void {
    const dropped = this.queued;
    this.count('dropped', dropped);
    this.queue = this.queue.slice(this.head).filter((item) => item instanceof SyncMarker);
    this.head = 0;
    this.queued = 0;
    this.outdate('overflow');
    for (const subscription of this.subscriptions) {
      if (subscription.skip === 0) continue;
      subscription.skip = 0;
      if (subscription.synced) this.receiveDirectly(subscription);
    }
    const { logger, maxQueuedNotifications } = this.context;
    const active = this.subscriptions.filter((s) => s.active);
    const resynced = new Set(active.filter((s) => s.spec.onOutOfSync).map((s) => s.spec.owner));
    if (resynced.size > 0) {
      logger.warn(OVERFLOW_RESYNC(this.name, dropped, maxQueuedNotifications));
      this.sync('overflow');
    }
    const uncovered = active.filter((s) => s.spec.onNotification && !resynced.has(s.spec.owner));
    if (uncovered.length > 0) this.reportDropped(uncovered, dropped);
  }

  /**
   * What every subscription read from the database so far is outdated: the next resync runs them
   * all, and a first sync that has read already runs again (after the current LISTEN).
   */
  private outdate(reason: OutOfSyncReason): void {
    for (const subscription of this.subscriptions) {
      if (subscription.held && !subscription.synced) {
        if (subscription.readAfter) subscription.again = merge(subscription.again, reason);
      } else {
        subscription.readAfter = undefined;
      }
    }
  }

  private reportDropped(subscriptions: readonly Subscription[], dropped: number): void {
    const { logger, maxQueuedNotifications } = this.context;
    const names = subscriptions.map((s) => s.spec.name);
    const error = new PglnOverflowError(OVERFLOW_DROPPED(this.name, dropped, maxQueuedNotifications, names), this.name, dropped);
    logger.error(error.message);
    for (const subscription of subscriptions) this.report(subscription, error);
  }

  /**
   * Does the channel's work in order (the rest of the notification being delivered, then the queued
   * items) synchronously for as long as handlers complete synchronously. A handler that returns a
   * promise suspends it, and the promise's settlement resumes it: one promise reaction per awaited
   * handler, and no async function per notification. Called with `busy` set; clears it when the
   * queue is empty.
   */
  private pump(): void {
    for (;;) {
      if (this.current !== undefined && !this.deliver(this.current, this.recipients, this.nextRecipient)) return;
      this.current = undefined;
      const item = this.shift();
      if (item === undefined) return this.settle();
      if (item instanceof SyncMarker) {
        void this.runMarker(item).then(this.resume);
        return;
      }
      this.queued--;
      // To the channel's subscriptions as they are now.
      if (!this.deliver(item, this.subscriptions, 0)) return;
    }
  }

  /**
   * Calls the handlers of `recipients`, from index `from`, with `notification`. Returns false when
   * one returned a promise: delivery is suspended (see {@link suspend}), to go on from the next
   * recipient once it settles.
   */
  private deliver(notification: PglnNotification, recipients: readonly Subscription[], from: number): boolean {
    for (let i = from; i < recipients.length && !this.closed; i++) {
      const subscription = recipients[i]!;
      if (!subscription.receiving) {
        // Its first sync runs beside the queue: held for it alone. Otherwise it was removed, or
        // its own resync, queued behind this notification, covers it.
        if (subscription.held) this.hold(subscription, notification);
        continue;
      }
      const result = this.call(subscription, notification);
      if (result) {
        this.current = notification;
        this.recipients = recipients;
        this.nextRecipient = i + 1;
        this.suspend(result, subscription);
        return false;
      }
    }
    return true;
  }

  private readonly resume = (): void => this.pump();

  /** Waits for a handler's promise (timed for slow-handler warnings), counts or reports it, then resumes. */
  private suspend(result: PromiseLike<unknown>, subscription: Subscription): void {
    this.started(this.lane, subscription);
    this.awaited = subscription;
    // A native promise is used as it is: its own reaction is the only hop.
    Promise.resolve(result).then(this.handled, this.failed);
  }

  private readonly handled = (value: unknown): void => {
    if (value !== REJECTED) {
      this.counts.delivered++;
      this.context.totals.delivered++;
    }
    this.finished(this.lane);
    this.pump();
  };

  private readonly failed = (error: unknown): void => {
    this.fail(this.awaited!, error);
    this.finished(this.lane);
    this.pump();
  };

  /** Takes the next item off the queue, or undefined when it is empty or the channel closed. */
  private shift(): Item | undefined {
    if (this.head >= this.queue.length || this.closed) return undefined;
    const item = this.queue[this.head]!;
    this.queue[this.head++] = undefined;
    if (this.head === this.queue.length) {
      this.queue.length = 0;
      this.head = 0;
    } else if (this.head >= 1024 && this.head * 2 >= this.queue.length) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
    return item;
  }

  /** No item in progress any more: release whoever waits for the channel to settle. */
  private settle(): void {
    this.busy = false;
    if (this.idle) {
      this.idle.resolve();
      this.idle = undefined;
    }
  }

  /** Calls a subscription's notification handler; returns its promise if it returned one (failures are reported). */
  private call(subscription: Subscription, notification: PglnNotification): PromiseLike<unknown> | undefined {
    const handler = subscription.spec.onNotification;
    if (!handler) return undefined;
    this.context.turns.note(subscription, this.name);
    let payload: unknown = notification.payload;
    const { json, schema } = subscription.spec;
    if (json) {
      try {
        payload = JSON.parse(notification.payload);
      } catch (cause) {
        const message = PAYLOAD_NOT_JSON(this.name, (cause as Error).message);
        this.rejectPayload(subscription, new PglnPayloadError(message, this.name, { cause }));
        return undefined;
      }
    }
    try {
      if (schema) {
        payload = validatePayload(schema, this.name, payload, 'Payload received on');
        if (isPromiseLike(payload)) return this.callValidated(subscription, notification, payload);
      }
    } catch (error) {
      this.rejectPayload(subscription, error as PglnPayloadError);
      return undefined;
    }
    try {
      const { telemetry } = this.context;
      const result = telemetry
        ? telemetry.notification(this.name, subscription.spec, payload, notification)
        : handler(payload, notification);
      if (isPromiseLike(result)) return result;
      this.counts.delivered++;
      this.context.totals.delivered++;
    } catch (error) {
      this.fail(subscription, error);
    }
    return undefined;
  }

  /** {@link call} for a schema that validates asynchronously; resolves with {@link REJECTED} when the payload failed it. */
  private async callValidated(subscription: Subscription, notification: PglnNotification, validated: PromiseLike<unknown>): Promise<unknown> {
    let payload: unknown;
    try {
      payload = await validated;
    } catch (error) {
      this.rejectPayload(subscription, error as PglnPayloadError);
      return REJECTED;
    }
    const { telemetry } = this.context;
    return telemetry
      ? telemetry.notification(this.name, subscription.spec, payload, notification)
      : subscription.spec.onNotification!(payload, notification);
  }

  /** Waits for a handler's promise, reporting a rejection; `run` times it for slow-handler warnings. */
  private async settleHandler(result: PromiseLike<unknown>, subscription: Subscription, run: Run): Promise<void> {
    this.started(run, subscription);
    try {
      if ((await result) !== REJECTED) {
        this.counts.delivered++;
        this.context.totals.delivered++;
      }
    } catch (error) {
      this.fail(subscription, error);
    } finally {
      this.finished(run);
    }
  }

  /** Resyncs the marker's subscriptions one after another. */
  private async runMarker(marker: SyncMarker): Promise<void> {
    try {
      // Until its LISTEN has run it has read nothing: a newer resync may still supersede it.
      let listened: Promise<boolean>;
      let ok: boolean;
      do {
        listened = marker.listened;
        ok = await listened;
      } while (marker.listened !== listened);
      if (this.waiting === marker) this.waiting = undefined;
      // False: the connection died before LISTEN completed; the next connection queues its own marker.
      if (!ok) return;
      for (const subscription of marker.subscriptions) {
        // It read the database after this LISTEN already: nothing to redo.
        if (subscription.readAfter === marker.listened) continue;
        if (subscription.held && !subscription.synced) {
          // That first sync still runs. If it read before this LISTEN, it runs again; if it waits
          // for a LISTEN, it reads after it anyway.
          if (subscription.readAfter) subscription.again = merge(subscription.again, marker.reason);
          continue;
        }
        const reason = subscription.synced ? marker.reason : subscription.firstReason;
        subscription.readAfter = marker.listened;
        if (await this.outOfSync(subscription, reason, this.lane)) subscription.markSynced();
      }
      marker.ran = !this.closed;
    } finally {
      marker.resolve();
    }
  }

  /** See {@link syncAlone}. */
  private async runAlone(subscription: Subscription, run: Run): Promise<void> {
    try {
      let reason = subscription.firstReason;
      for (;;) {
        // Every run reads after the LISTEN of the current (or next) connection.
        subscription.readAfter = undefined;
        let listened = this.upcoming ? (await this.upcoming).listened : this.listened;
        while (!(await listened)) {
          // That connection died before its LISTEN ran (a new one is then upcoming): wait for the next one's.
          if (!subscription.active || this.closed || !this.upcoming) return;
          listened = (await this.upcoming).listened;
        }
        subscription.readAfter = listened;
        if (!(await this.outOfSync(subscription, reason, run))) return;
        const held = subscription.held!;
        while (held.length > 0 && !subscription.again && subscription.active && !this.closed) {
          const result = this.call(subscription, held.shift()!);
          if (result) await this.settleHandler(result, subscription, run);
        }
        if (!subscription.again) break;
        reason = subscription.again;
        subscription.again = undefined;
      }
      // In sync; it receives directly once the notifications queued before it have passed (see hold()).
      if (subscription.skip === 0) subscription.held = undefined;
      subscription.markSynced();
    } finally {
      if (!subscription.synced) subscription.held = undefined;
      subscription.again = undefined;
      this.side.delete(run);
    }
  }

  /** Holds a notification for a subscription whose first sync runs; past the queue limit, as {@link overflow} does. */
  private hold(subscription: Subscription, notification: PglnNotification): void {
    if (subscription.skip > 0) {
      if (--subscription.skip === 0 && subscription.synced) this.receiveDirectly(subscription);
      return;
    }
    const held = subscription.held!;
    held.push(notification);
    if (held.length <= this.context.maxQueuedNotifications) return;
    const dropped = held.length;
    held.length = 0;
    this.count('dropped', dropped);
    if (subscription.spec.onOutOfSync) {
      this.context.logger.warn(OVERFLOW_RESYNC(this.name, dropped, this.context.maxQueuedNotifications));
      subscription.again = merge(subscription.again, 'overflow');
    } else {
      this.reportDropped([subscription], dropped);
    }
  }

  /** A subscription whose first sync ran beside the queue has seen the older notifications pass: it joins the others. */
  private receiveDirectly(subscription: Subscription): void {
    subscription.held = undefined;
    subscription.receiving = subscription.active;
  }

  /**
   * Runs a subscription's out-of-sync handler, retried with backoff until it succeeds. Resolves
   * true once it has (or when there is none), false when the subscription was removed or the
   * channel closed first.
   */
  private async outOfSync(subscription: Subscription, reason: OutOfSyncReason, run: Run): Promise<boolean> {
    const handler = subscription.spec.onOutOfSync;
    for (let attempt = 1; handler; attempt++) {
      if (!subscription.active || this.closed) return false;
      this.started(run, subscription);
      const startedAt = Date.now();
      try {
        const event = { channel: this.name, reason };
        const { telemetry } = this.context;
        await (telemetry ? telemetry.outOfSync(subscription.spec, event) : handler(event));
        this.counts.resyncs[reason]++;
        this.context.totals.resyncs[reason]++;
        this.lastResync = { handler: subscription.spec.name, reason, at: new Date(), durationMs: Date.now() - startedAt };
        return subscription.active && !this.closed;
      } catch (error) {
        this.fail(subscription, error, 'out-of-sync handler; notifications stay held and it is retried');
      } finally {
        this.finished(run);
      }
      try {
        await this.context.backoff.wait(attempt, subscription.removed);
      } catch {
        return false; // removed while waiting
      }
    }
    return subscription.active && !this.closed;
  }

  /** Counts on this channel and in the instance's totals, which outlive it. */
  private count(key: 'dropped' | 'handlerFailures' | 'invalidPayloads', by = 1): void {
    this.counts[key] += by;
    this.context.totals[key] += by;
  }

  private started(run: Run, subscription: Subscription): void {
    run.name = subscription.spec.name;
    run.since = 0;
    run.warned = false;
  }

  private finished(run: Run): void {
    if (run.warned) this.context.logger.warn(SLOW_HANDLER_DONE(run.name!, this.name, Date.now() - run.since));
    run.name = undefined;
  }

  /** Logs a handler failure with its stack and tells the subscription's onError, if any. */
  private fail(subscription: Subscription, cause: unknown, what?: string): void {
    this.count('handlerFailures');
    const message = HANDLER_FAILED(subscription.spec.name, this.name) + (what ? ` (${what})` : '');
    const error = new PglnHandlerError(message, this.name, subscription.spec.name, { cause });
    const detail = cause instanceof Error ? (cause.stack ?? cause.message) : String(cause);
    this.context.logger.error(`${message}: ${detail}`);
    this.report(subscription, error);
  }

  /** A payload that is not JSON, or fails the channel's schema: logged (naming the handler), reported, skipped. */
  private rejectPayload(subscription: Subscription, error: PglnPayloadError): void {
    this.count('invalidPayloads');
    this.context.logger.error(`${error.message} (skipped for ${subscription.spec.name})`);
    this.report(subscription, error);
  }

  private report(subscription: Subscription, error: PglnHandlerError | PglnOverflowError | PglnPayloadError): void {
    try {
      subscription.spec.onError?.(error);
    } catch (secondary) {
      this.context.logger.error(`onError of ${subscription.spec.name} threw: ${(secondary as Error)?.stack ?? secondary}`);
    }
  }
}
