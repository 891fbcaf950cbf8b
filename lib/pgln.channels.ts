import type { Notification } from 'pg';
import type { OutOfSyncReason, PglnChannelStats, PglnNotification } from './interfaces/index.js';
import { Channel, type Listen } from './channel/channel.js';
import type { ChannelContext } from './channel/channel-context.js';
import { Subscriber } from './channel/subscriber.js';
import { PglnChannelError } from './errors/index.js';
import { describeError } from './pgln.connection-errors.js';
import { LISTEN_REFUSED } from './pgln.messages.js';
import { withTimeout } from './pgln.promises.js';
import type { SubscriptionSpec } from './pgln.subscription.js';

/**
 * The channels of one listener, by name: registration (one subscriber per owner and channel),
 * removal, and the delivery of each notification to its channel. What the listener tells every
 * channel at once (a new connection's LISTEN, a lost connection) goes through here too.
 */
export class Channels {
  private readonly byName = new Map<string, Channel>();
  /**
   * The channel the last notification went to. Notifications come in runs on one channel, and pg
   * parses each channel name into a new string, which a `Map` must hash: comparing it with the
   * last name is several times cheaper. Cleared when that channel is dropped.
   */
  private last?: Channel;

  constructor(private readonly context: ChannelContext) {}

  get size(): number {
    return this.byName.size;
  }

  get(name: string): Channel | undefined {
    return this.byName.get(name);
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  names(): string[] {
    return [...this.byName.keys()];
  }

  all(): Channel[] {
    return [...this.byName.values()];
  }

  /**
   * Registers handlers: the registrations of one owner on one channel make one subscriber, whose
   * first read is given `firstReason`. Resolves with the subscribers added and the channels created
   * for them (which the connection, if any, must now LISTEN on).
   */
  add(entries: readonly { channel: string; spec: SubscriptionSpec }[], firstReason: OutOfSyncReason): { added: Subscriber[]; fresh: Channel[] } {
    // Channel, then owner, in registration order.
    const groups = new Map<string, Map<object, SubscriptionSpec[]>>();
    for (const { channel, spec } of entries) {
      const owners = groups.get(channel) ?? groups.set(channel, new Map()).get(channel)!;
      owners.set(spec.owner, [...(owners.get(spec.owner) ?? []), spec]);
    }
    const fresh: Channel[] = [];
    const added: Subscriber[] = [];
    for (const [name, owners] of groups) {
      let channel = this.byName.get(name);
      if (!channel) {
        channel = new Channel(name, this.context);
        this.byName.set(name, channel);
        fresh.push(channel);
      }
      for (const specs of owners.values()) {
        const subscriber = new Subscriber(channel, specs, firstReason);
        channel.add(subscriber);
        added.push(subscriber);
      }
    }
    return { added, fresh };
  }

  /** Whether `subscriber` is still registered on a channel of these. */
  holds(subscriber: Subscriber): boolean {
    return subscriber.active && this.byName.get(subscriber.channel.name) === subscriber.channel;
  }

  /** Stops delivering to a channel, its subscribers removed with `error`; it is no longer LISTENed on new connections. */
  forget(channel: Channel, error: Error): Promise<void> {
    this.byName.delete(channel.name);
    if (this.last === channel) this.last = undefined;
    return channel.close(error);
  }

  /** The server refused to LISTEN on a channel: its subscriptions fail with a {@link PglnChannelError}, the channel goes. */
  refuse(name: string, cause: Error): void {
    const channel = this.byName.get(name);
    if (!channel) return;
    const handlers = channel.subscribers.map((subscriber) => subscriber.name);
    const error = new PglnChannelError(LISTEN_REFUSED(name, describeError(cause), handlers), name, { cause });
    this.context.logger.error(error.message);
    void this.forget(channel, error);
  }

  /**
   * Forgets every channel (shutdown), their subscriptions removed with `error`: resolves once their
   * running handlers finished, or after `timeoutMs` (logged) whatever they do.
   */
  async closeAll(error: Error, timeoutMs: number): Promise<void> {
    const closing = this.all().map((channel) => channel.close(error));
    this.byName.clear();
    this.last = undefined;
    try {
      await withTimeout(Promise.all(closing), timeoutMs, () => new Error('timeout'));
    } catch {
      this.context.logger.warn(`Handlers still running after shutdownTimeoutMs (${timeoutMs} ms); closing the connection anyway`);
    }
  }

  /** Hands a notification to its channel (none: nothing listens on it any more). */
  readonly dispatch = (message: Notification): void => {
    this.context.turns.begin();
    let channel = this.last;
    if (channel?.name !== message.channel) {
      channel = this.last = this.byName.get(message.channel);
      if (!channel) return;
    }
    // pg's own object, passed on as is (no copy on the hot path): it has channel, payload (always a
    // string, '' when none was sent) and processId, as PglnNotification says.
    channel.push(message as PglnNotification);
  };

  /** A connection's LISTEN on `channels`: each reads again if its last read followed an older one. */
  listening(channels: readonly Channel[], listen: Listen): void {
    for (const channel of channels) channel.listening(listen);
  }

  /** The connection is lost: every channel waits for the next one. */
  disconnected(): void {
    for (const channel of this.byName.values()) channel.disconnected();
  }

  /** Logs handlers running longer than `slowMs`. */
  checkSlow(now: number, slowMs: number): void {
    for (const channel of this.byName.values()) channel.checkSlow(now, slowMs);
  }

  /** Resolves once no handler of the channel (of every channel, without a name) runs or waits to run. */
  async settled(name?: string): Promise<void> {
    const channels = name === undefined ? this.all() : [this.byName.get(name)].filter((c) => c !== undefined);
    await Promise.all(channels.flatMap((channel) => channel.subscribers.map((subscriber) => subscriber.settled())));
  }

  /** Per-channel stats, and how many notifications wait in all. */
  stats(): { channels: Record<string, PglnChannelStats>; queued: number } {
    const channels: Record<string, PglnChannelStats> = {};
    let queued = 0;
    for (const channel of this.byName.values()) {
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
    return { channels, queued };
  }
}
