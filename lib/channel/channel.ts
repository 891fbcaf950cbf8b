import { PglnOverflowError, type PglnPayloadLostError } from '../errors/index.js';
import type { PglnNotification } from '../interfaces/index.js';
import { referenceOf } from '../pgln.large-payloads.js';
import { Counts } from '../pgln.counts.js';
import { ARRIVALS_OVERFLOW, CHANNEL_NAME_CASE } from '../pgln.messages.js';
import { deferred, untilAborted } from '../pgln.promises.js';
import { Arrivals } from './arrivals.js';
import type { ChannelContext } from './channel-context.js';
import type { LastResync } from './out-of-sync-handlers.js';
import { Reporting } from './reporting.js';
import type { Subscriber } from './subscriber.js';

/** One LISTEN of a channel: on which connection (its epoch), and whether it ran. */
export interface Listen {
  /** Numbers the connections: a later connection's LISTEN has a higher epoch (see {@link SyncState}). */
  readonly epoch: number;
  /** Resolves true once LISTEN ran; false if its connection died first. */
  readonly ran: Promise<boolean>;
}

/**
 * One LISTENed channel: its subscribers, the LISTEN of the current connection, and the position of
 * the last notification that arrived. Every notification goes to every subscriber, which delivers
 * it or queues it (see {@link Subscriber}).
 */
export class Channel {
  /** Replaced, never mutated, so a delivery in progress keeps a stable list. */
  subscribers: readonly Subscriber[] = [];
  /** What happened on this channel since it was created (see `PglnService.stats()`); the totals count it too. */
  readonly counts = new Counts();
  readonly reporting: Reporting;
  /** The last out-of-sync handler run that completed. */
  lastResync?: LastResync;
  /** The LISTEN of the current connection; undefined while there is none. */
  private listen?: Listen;
  /** While there is no connection: resolves with the next connection's LISTEN. */
  private upcoming?: { promise: Promise<Listen>; resolve: (listen: Listen) => void };
  private closed = false;
  /** Notifications held while a large payload is fetched (`largePayloads`), created with the first one. */
  private arrivals?: Arrivals;

  constructor(
    readonly name: string,
    readonly context: ChannelContext,
  ) {
    this.reporting = new Reporting(name, this.counts, context);
    // SQL folds unquoted names to lower case: a NOTIFY in psql or a migration may miss this channel.
    if (/[A-Z]/.test(name) && !context.caseHinted.has(name)) {
      context.caseHinted.add(name);
      context.logger.log(CHANNEL_NAME_CASE(name));
    }
  }

  /** How many notifications arrived so far (its received count): the position of the last one. */
  get position(): number {
    return this.counts.received;
  }

  /** Notifications waiting, counted per subscriber. */
  get depth(): number {
    let depth = this.arrivals?.length ?? 0;
    for (const subscriber of this.subscribers) depth += subscriber.queued;
    return depth;
  }

  /** Whether every subscriber is in sync (none has a read due or running). */
  get inSync(): boolean {
    return this.subscribers.every((subscriber) => subscriber.state.kind === 'live');
  }

  /**
   * A notification arrived: it gets the next position and goes to every subscriber, unless it
   * carries a reference to a large payload, or one that did waits for its payload: then it waits
   * too, in order (see {@link Arrivals}). (A closed channel is no longer dispatched to.)
   */
  push(notification: PglnNotification): void {
    const position = ++this.counts.received;
    this.context.totals.received++;
    const { payloads } = this.context;
    const reference = payloads && referenceOf(notification.payload);
    if (reference !== undefined || this.arrivals?.length) {
      this.arrivals ??= new Arrivals(this.name, this);
      this.arrivals.add(notification, position, reference === undefined ? undefined : { reference, payload: payloads!.fetch(reference, this.name) });
      if (this.arrivals.length > this.context.maxQueuedNotifications) this.overflow(this.arrivals);
      return;
    }
    this.deliver(notification, position);
  }

  /** Gives a notification to every subscriber, with the position it arrived at. */
  deliver(notification: PglnNotification, position: number): void {
    const { subscribers } = this;
    for (let i = 0; i < subscribers.length; i++) subscribers[i]!.push(notification, position);
  }

  /** Notifications up to `position` cannot be delivered: their large payloads are lost. */
  lost(position: number, error: PglnPayloadLostError): void {
    this.context.logger.error(error.message);
    this.missed(position, error);
  }

  /** Too many notifications wait behind a fetch: they are dropped, as a subscriber's overflowing queue is. */
  private overflow(arrivals: Arrivals): void {
    const dropped = arrivals.length;
    const position = arrivals.clear()!;
    const { logger, maxQueuedNotifications } = this.context;
    const error = new PglnOverflowError(ARRIVALS_OVERFLOW(this.name, dropped, maxQueuedNotifications), this.name, dropped);
    logger.warn(error.message);
    this.missed(position, error);
  }

  /** Every subscriber learns that notifications up to `position` will never come. */
  private missed(position: number, error: PglnPayloadLostError | PglnOverflowError): void {
    for (const subscriber of this.subscribers) subscriber.missed(position, error);
  }

  /** LISTEN for this channel is (being) sent on a new connection: reads that followed an older one are outdated. */
  listening(listen: Listen): void {
    this.listen = listen;
    this.upcoming?.resolve(listen);
    this.upcoming = undefined;
    for (const subscriber of this.subscribers) subscriber.listening(listen.epoch);
  }

  /** The connection is lost: reads wait for the next one's LISTEN. */
  disconnected(): void {
    this.listen = undefined;
  }

  /** Whether `listen` is the LISTEN of the current connection. */
  isCurrent(listen: Listen): boolean {
    return this.listen === listen;
  }

  /** The LISTEN of the current connection, or else of the next one; undefined if `signal` aborts first. */
  nextListen(signal: AbortSignal): Promise<Listen | undefined> {
    if (this.listen) return Promise.resolve(this.listen);
    this.upcoming ??= deferred<Listen>();
    return untilAborted(this.upcoming.promise, signal);
  }

  add(subscriber: Subscriber): void {
    this.subscribers = [...this.subscribers, subscriber];
  }

  remove(subscriber: Subscriber): void {
    this.subscribers = this.subscribers.filter((s) => s !== subscriber);
  }

  /**
   * Every subscriber reads again (reason `'manual'`). Resolves once each has completed a read that
   * began after this call (or was removed); rejects if the channel closed first.
   */
  async resync(): Promise<void> {
    await Promise.all(this.subscribers.map((subscriber) => subscriber.resync()));
    if (this.closed) throw new Error(`channel ${this.name} closed`);
  }

  /**
   * Stops the channel: its subscribers are removed (rejecting what waits for them with `error`) and
   * no handler starts any more. Resolves when the handlers in progress (if any) have finished.
   */
  close(error: Error): Promise<void> {
    const subscribers = this.subscribers;
    if (!this.closed) {
      this.closed = true;
      this.arrivals?.clear();
      for (const subscriber of subscribers) subscriber.remove(error);
    }
    return Promise.all(subscribers.map((subscriber) => subscriber.settled())).then(() => undefined);
  }

  /** Logs, once each, handlers that have been running for `thresholdMs` or more. */
  checkSlow(now: number, thresholdMs: number): void {
    for (const subscriber of this.subscribers) subscriber.run.check(now, thresholdMs, this.context.logger, this.name);
  }
}
