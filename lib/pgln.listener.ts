import type { Logger } from '@nestjs/common';
import pg from 'pg';
import type { Client, Notification } from 'pg';
import { PglnClosedError } from './errors/index.js';
import type { OutOfSyncReason, PglnNotification, PglnState } from './interfaces/index.js';
import { Backoff } from './pgln.backoff.js';
import { Channel, type SyncMarker } from './pgln.channel.js';
import { CLOSED } from './pgln.messages.js';
import type { ResolvedPglnOptions } from './pgln.options.js';
import { Subscription, type SubscriptionSpec } from './pgln.subscription.js';

const noop = () => undefined;

/**
 * Owns the one LISTEN connection and every channel. The connection's life is a state machine
 * whose transitions all go through {@link PglnListener.transition}:
 *
 *   idle -> connecting -> syncing -> live -> reconnecting -> syncing -> live ... -> closed
 *
 * On every (re)connect it queues a resync on each channel *before* sending LISTEN, so whatever
 * arrives after LISTEN is held behind the out-of-sync handlers and delivered after them.
 */
export class PglnListener {
  private readonly channels = new Map<string, Channel>();
  private readonly backoff: Backoff;
  private current: PglnState = 'idle';
  /** The connected LISTEN session, if any. */
  private client?: Client;
  /** A client whose connect() is in flight. */
  private connecting?: Client;
  private retryTimer?: NodeJS.Timeout;
  private attempt = 0;
  private connectedBefore = false;
  private closing?: Promise<void>;
  private started?: Promise<void>;
  private firstLive?: { resolve: () => void; reject: (error: Error) => void };

  constructor(
    private readonly options: ResolvedPglnOptions,
    private readonly logger: Logger,
  ) {
    this.backoff = new Backoff(options.backoff);
  }

  /** The connection state. */
  get state(): PglnState {
    return this.current;
  }

  /**
   * Starts connecting, once; every call returns the same promise, which resolves when the first
   * connection is live (its channels in sync) and rejects if the listener is closed before that.
   */
  start(): Promise<void> {
    if (this.closing) return Promise.reject(new PglnClosedError(CLOSED('start listening')));
    this.started ??= new Promise<void>((resolve, reject) => {
      this.firstLive = { resolve, reject };
      this.transition('connecting', this.options.target);
      this.connect();
    });
    return this.started;
  }

  /**
   * Registers handlers on a channel. When connected, a new channel is LISTENed at once and the
   * subscription's first resync is queued; otherwise the next connection takes care of both.
   */
  subscribe(channel: string, spec: SubscriptionSpec, firstReason: OutOfSyncReason): Subscription {
    if (this.current === 'closed') throw new PglnClosedError(CLOSED(`listen on "${channel}"`));
    const subscription = new Subscription(channel, spec, firstReason);
    let target = this.channels.get(channel);
    const isNew = !target;
    if (!target) {
      target = new Channel(channel, this.logger, this.backoff);
      this.channels.set(channel, target);
    }
    target.add(subscription);
    if (this.client) {
      if (isNew) this.listen(this.client, [target], 'listen', [subscription]);
      else target.sync('listen', target.listened, [subscription]);
    }
    return subscription;
  }

  /** Removes one subscription; UNLISTENs when it was its channel's last. No handler of it runs once this resolves. */
  async unsubscribe(subscription: Subscription): Promise<void> {
    const channel = this.channels.get(subscription.channel);
    if (!subscription.active || !channel) return;
    subscription.deactivate();
    channel.remove(subscription);
    if (channel.subscriptions.length === 0) return this.drop(channel);
    await channel.settled();
  }

  /** Removes every subscription of a channel and UNLISTENs it. */
  async unlisten(name: string): Promise<void> {
    const channel = this.channels.get(name);
    if (!channel) return;
    for (const subscription of channel.subscriptions) subscription.deactivate();
    await this.drop(channel);
  }

  /** Shuts down: stops timers and deliveries, waits (bounded) for running handlers, UNLISTENs, disconnects. */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async drop(channel: Channel): Promise<void> {
    this.channels.delete(channel.name);
    // Sent before anything is awaited, so a later LISTEN of the same name is queued after it.
    const unlistened = this.client
      ?.query(`UNLISTEN ${this.client.escapeIdentifier(channel.name)}`)
      .then(noop, noop);
    await Promise.all([channel.close(), unlistened]);
  }

  private readonly dispatch = (message: Notification): void => {
    // pg always sets payload (to '' when none was sent).
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
    if (this.closing) {
      client.end().catch(noop);
      return;
    }
    this.client = client;
    const reason: OutOfSyncReason = this.connectedBefore ? 'reconnect' : 'connect';
    this.connectedBefore = true;
    const channels = [...this.channels.values()];
    this.transition('syncing', `listening on ${channels.length} channel(s), running out-of-sync handlers`);
    const markers = this.listen(client, channels, reason);
    void Promise.all(markers.map((marker) => marker.done)).then(() => {
      if (this.client !== client) return;
      this.attempt = 0;
      this.transition('live', `${this.channels.size} channel(s) in sync`);
      this.firstLive?.resolve();
      this.firstLive = undefined;
    });
  }

  /** LISTENs on `channels` in one round trip and queues their resyncs ahead of anything LISTEN lets in. */
  private listen(
    client: Client,
    channels: Channel[],
    reason: OutOfSyncReason,
    only?: readonly Subscription[],
  ): SyncMarker[] {
    if (channels.length === 0) return [];
    const sql = channels.map((channel) => `LISTEN ${client.escapeIdentifier(channel.name)}`).join('; ');
    const listened = client.query(sql).then(
      () => true,
      (error: Error) => {
        // The session must hold every wanted channel: start over on a new connection.
        this.lost(client, error);
        return false;
      },
    );
    return channels.map((channel) => channel.sync(reason, listened, only));
  }

  private connectFailed(client: Client, error: Error): void {
    this.connecting = undefined;
    client.end().catch(noop);
    if (this.closing) return;
    const delay = this.scheduleConnect();
    this.logger.warn(
      `Cannot connect to ${this.options.target} (attempt ${this.attempt}): ${error.message}; retrying in ${delay} ms`,
    );
  }

  /** The current session failed (error, end, or a LISTEN it could not run): reconnect, once. */
  private lost(client: Client, error?: Error): void {
    if (client !== this.client) return;
    this.client = undefined;
    client.end().catch(noop);
    if (this.closing) return;
    this.transition('reconnecting', `connection lost: ${error?.message ?? 'the server closed the connection'}`);
    this.scheduleConnect();
  }

  private scheduleConnect(): number {
    const delay = this.backoff.delay(this.attempt++);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.connect();
    }, delay);
    return delay;
  }

  private transition(next: PglnState, detail: string): void {
    const previous = this.current;
    this.current = next;
    const line = `${previous} -> ${next}: ${detail}`;
    if (next === 'reconnecting') this.logger.warn(line);
    else this.logger.log(line);
  }

  private async shutdown(): Promise<void> {
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.transition('closed', 'application shutdown');
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
    if (client) {
      await client.query('UNLISTEN *').catch(noop);
      await client.end().catch(noop);
    }
    await connecting?.end().catch(noop);
  }

  private async waitForHandlers(running: Promise<void>[]): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), this.options.shutdownTimeoutMs);
    });
    const finished = await Promise.race([Promise.all(running).then(() => true), timeout]);
    clearTimeout(timer);
    if (!finished) {
      this.logger.warn(
        `Handlers still running after shutdownTimeoutMs (${this.options.shutdownTimeoutMs} ms); closing the connection anyway`,
      );
    }
  }
}
