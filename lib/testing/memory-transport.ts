import { notificationsOf } from '../pgln.notify-query.js';
import type { ListenSessionEvents, SessionHealth } from '../pgln.session.js';
import type { Outgoing, PglnTransport, Session, TransportListener } from '../pgln.transport.js';

/** A notification sent through the service, as the application gave it (see `PglnTestBus.sent`). */
export interface SentNotification {
  /** The channel's name. */
  readonly channel: string;
  /** The payload as given to `notify` / `notifyMany` (before any encoding). */
  readonly payload: unknown;
  /** Sent with `{ executor }`, on the application's own transaction. */
  readonly executor?: true;
}

/** What the in-memory server delivers: a channel, the payload text as PostgreSQL would hand it over, and a sender. */
interface Delivery {
  readonly channel: string;
  readonly payload: string;
  /** Wrap in the exactly-once envelope, with a transaction id of the bus's. */
  readonly once: boolean;
}

/** `processId` of what `PglnTestBus.emit()` delivers (another sender) and of what the application itself sends. */
export const EMITTED_BY = 0;
export const SENT_BY = 1;

/** A LISTEN session on the in-memory bus: it hears what the bus delivers on its channels while it is connected. */
class MemorySession implements Session {
  readonly identity = undefined;
  private readonly channels = new Set<string>();
  private ended = false;

  constructor(
    private readonly bus: MemoryTransport,
    private readonly events: ListenSessionEvents,
  ) {}

  /** Connects as soon as the bus is connected (at once, unless `disconnect()` was called). */
  async connect(): Promise<void> {
    await this.bus.whenConnected();
    if (this.ended) throw new Error('PglnTestBus: the session was closed while connecting');
    // Disconnected again before this session got its turn: refused, as a server that went away.
    if (!this.bus.connected) throw Object.assign(new Error('connect ECONNREFUSED (PglnTestBus is disconnected)'), { code: 'ECONNREFUSED' });
    this.bus.opened(this);
  }

  async listen(names: readonly string[]): Promise<Map<string, Error>> {
    this.alive();
    for (const name of names) this.channels.add(name);
    return new Map();
  }

  async unlisten(name: string): Promise<void> {
    this.alive();
    this.channels.delete(name);
  }

  async health(): Promise<SessionHealth> {
    this.alive();
    return { channels: new Set(this.channels), queueUsage: 0 };
  }

  async terminate(): Promise<number[]> {
    return [];
  }

  /** It hears everything the bus delivers. */
  async probe() {
    return { kind: 'hears' } as const;
  }

  async close(): Promise<void> {
    this.destroy();
  }

  destroy(): void {
    this.ended = true;
    this.bus.closed(this);
  }

  /** Hands a notification over, if it listens on its channel. */
  deliver(channel: string, payload: string, processId: number): void {
    if (!this.ended && this.channels.has(channel)) this.events.notification({ channel, payload, processId });
  }

  /** The bus went away: lost, as a connection reset would be. */
  lose(): void {
    if (this.ended) return;
    this.ended = true;
    this.events.lost(this, Object.assign(new Error('connection lost (PglnTestBus.disconnect())'), { code: 'ECONNRESET' }));
  }

  private alive(): void {
    if (this.ended) throw Object.assign(new Error('Connection terminated (PglnTestBus)'), { code: 'ECONNRESET' });
  }
}

/**
 * The transport of `nestjs-pgln/testing`: PostgreSQL's LISTEN/NOTIFY in memory. Sessions hear
 * what it delivers on their channels; what the application sends is recorded and delivered back
 * (as PostgreSQL delivers a commit to every listener, the sender's own included). While
 * disconnected, sessions are lost, new ones wait to connect, and sending through the pool fails.
 */
export class MemoryTransport implements PglnTransport {
  readonly target = 'the in-memory bus of nestjs-pgln/testing';
  /** A lost session is back at once, whatever backoff the application configures. */
  readonly reconnect = { initialDelayMs: 1, maxDelayMs: 10 };
  readonly sent: SentNotification[] = [];
  listener?: TransportListener;
  connected = true;
  private readonly sessions = new Set<MemorySession>();
  private waiting: (() => void)[] = [];
  /** Transaction ids of exactly-once notifications: any increasing number serves. */
  private xid = 1_000n;

  session(events: ListenSessionEvents): Session {
    return new MemorySession(this, events);
  }

  async send({ query, notifications, executor }: Outgoing): Promise<void> {
    if (!executor && !this.connected) {
      throw Object.assign(new Error('connect ECONNREFUSED (PglnTestBus is disconnected)'), { code: 'ECONNREFUSED' });
    }
    for (const { channel, payload } of notifications) this.sent.push(executor ? { channel, payload, executor: true } : { channel, payload });
    this.deliver(notificationsOf(query), SENT_BY);
  }

  async end(): Promise<void> {
    this.disconnect();
  }

  attach(listener: TransportListener): void {
    this.listener = listener;
  }

  /**
   * Delivers what one transaction sent, in order, to every connected session listening on each
   * channel (nothing while disconnected: it is lost). As in PostgreSQL, identical notifications of
   * one transaction arrive once, and exactly-once ones carry that transaction's one id.
   */
  deliver(deliveries: readonly Delivery[], processId: number): void {
    const xid = this.xid++;
    const seen = new Set<string>();
    for (const { channel, payload, once } of deliveries) {
      const text = once ? `{"$x" : "${xid}", "$p" : ${payload}}` : payload;
      const key = JSON.stringify([channel, text]);
      if (seen.has(key)) continue;
      seen.add(key);
      for (const session of [...this.sessions]) session.deliver(channel, text, processId);
    }
  }

  /** A `pg_current_snapshot()` text that sees every transaction id handed out so far. */
  snapshot(): string {
    return `${this.xid}:${this.xid}:`;
  }

  disconnect(): void {
    this.connected = false;
    for (const session of [...this.sessions]) session.lose();
  }

  connect(): void {
    this.connected = true;
    for (const release of this.waiting.splice(0)) release();
  }

  whenConnected(): Promise<void> {
    return this.connected ? Promise.resolve() : new Promise((resolve) => this.waiting.push(resolve));
  }

  opened(session: MemorySession): void {
    this.sessions.add(session);
  }

  closed(session: MemorySession): void {
    this.sessions.delete(session);
  }
}
