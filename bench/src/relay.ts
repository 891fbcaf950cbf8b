import { createConnection, createServer, type Server, type Socket } from 'node:net';

/** One receiver connection through the relay, and where the server's stream to it stands. */
interface Link {
  readonly client: Socket;
  /** Whether the receiver sent LISTEN on it. */
  listening: boolean;
  /** Bytes of the server's current message still to come (0: between two messages, or within a header). */
  remaining: number;
  /** The part of the server's next message header (type and length, 5 bytes) seen so far. */
  header: Buffer;
  /** Notifications to append to the server's stream at the next message boundary. */
  pending?: { block: Buffer; written: () => void };
}

const NO_BYTES = Buffer.alloc(0);

/**
 * A TCP relay between receiver processes and PostgreSQL. What the server and the receivers send
 * passes through unchanged; {@link inject} appends a block of NotificationResponse messages to what
 * the server sends on a receiver's LISTEN connection, between two of the server's messages.
 *
 * Every contender then reads the very same bytes, already in memory, as fast as it can: its rate
 * and CPU per notification are its own. Sent by the server instead, the rate is set by how the
 * server's backend, the sender and the receiver share the cores, and moves from round to round
 * by more than the differences measured.
 */
export class Relay {
  private server?: Server;
  private readonly links = new Set<Link>();

  constructor(
    private readonly upstreamHost: string,
    private readonly upstreamPort: number,
  ) {}

  /** `url` with its host and port replaced by the relay's. */
  url(url: string): string {
    const parsed = new URL(url);
    parsed.hostname = '127.0.0.1';
    parsed.port = String((this.server!.address() as { port: number }).port);
    return parsed.toString();
  }

  async start(): Promise<this> {
    this.server = createServer((client) => this.accept(client));
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    return this;
  }

  /**
   * Appends `block` to the server's stream on the connection that sent LISTEN last; resolves once
   * it is handed to the kernel in full (the receiver may still be reading it).
   */
  inject(block: Buffer): Promise<void> {
    const link = [...this.links].reverse().find((candidate) => candidate.listening && !candidate.client.destroyed);
    if (!link) return Promise.reject(new Error('the relay saw no LISTEN connection'));
    return new Promise((resolve) => {
      link.pending = { block, written: resolve };
      this.flush(link);
    });
  }

  async stop(): Promise<void> {
    for (const link of this.links) link.client.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  private accept(client: Socket): void {
    const link: Link = { client, listening: false, remaining: 0, header: NO_BYTES };
    this.links.add(link);
    const upstream = createConnection(this.upstreamPort, this.upstreamHost);
    for (const socket of [client, upstream]) socket.on('error', () => undefined);
    client.on('close', () => {
      this.links.delete(link);
      upstream.destroy();
    });
    upstream.on('close', () => client.destroy());
    client.on('data', (chunk: Buffer) => {
      // LISTEN, in a simple or an extended query: enough to tell the LISTEN connection from others.
      if (!link.listening && /listen /i.test(chunk.toString('latin1'))) link.listening = true;
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      this.track(link, chunk);
      client.write(chunk);
      this.flush(link);
    });
  }

  /** Follows the server's messages (a type byte, then a length that counts itself) across chunks. */
  private track(link: Link, chunk: Buffer): void {
    let offset = 0;
    while (offset < chunk.length) {
      if (link.remaining > 0) {
        const take = Math.min(link.remaining, chunk.length - offset);
        link.remaining -= take;
        offset += take;
        continue;
      }
      const take = Math.min(5 - link.header.length, chunk.length - offset);
      link.header = Buffer.concat([link.header, chunk.subarray(offset, offset + take)]);
      offset += take;
      if (link.header.length === 5) {
        link.remaining = link.header.readUInt32BE(1) - 4;
        link.header = NO_BYTES;
      }
    }
  }

  private flush(link: Link): void {
    if (!link.pending || link.remaining > 0 || link.header.length > 0) return;
    const { block, written } = link.pending;
    link.pending = undefined;
    link.client.write(block, () => written());
  }
}

/**
 * `total` NotificationResponse messages as PostgreSQL sends them: payloads 1 to `total`, spread
 * over `channels` in turn (as the benchmark's own flood spreads them), from backend `pid`.
 */
export function notificationBlock(channels: readonly string[], total: number, pid: number): Buffer {
  const names = channels.map((channel) => Buffer.from(`${channel}\0`));
  const parts: Buffer[] = [];
  for (let i = 1; i <= total; i++) {
    const name = names[i % names.length]!;
    const payload = Buffer.from(`${i}\0`);
    const header = Buffer.alloc(9);
    header.write('A', 0, 'latin1');
    header.writeUInt32BE(4 + 4 + name.length + payload.length, 1);
    header.writeUInt32BE(pid, 5);
    parts.push(header, name, payload);
  }
  return Buffer.concat(parts);
}
