import { createConnection, createServer, type Server, type Socket } from 'node:net';

/** `sql` without the comment it may start with (the LISTEN session marks its statements so). */
function withoutComment(sql: string): string {
  return sql.replace(/^\/\*.*?\*\/ /s, '');
}

/** One client connection and its upstream, with the state the proxy needs to inject a query. */
interface Pair {
  client: Socket;
  upstream?: Socket;
  /** Bytes from upstream not yet split into protocol messages. */
  pending: Buffer;
  /** True when the last upstream message was ReadyForQuery and the client has sent nothing since. */
  idle: boolean;
  /** Replies (CommandComplete + ReadyForQuery) of injected queries still to swallow. */
  swallow: number;
  /** Bytes from the client not yet split into protocol messages; the first message has no type byte. */
  sent: Buffer;
  startupSeen: boolean;
}

/**
 * An in-process TCP proxy to put between the LISTEN connection and PostgreSQL, to produce the
 * faults a network and a server can: reset every connection, blackhole them (stop forwarding but
 * keep the sockets open: a half-open connection), refuse new connections, add latency, and run a
 * statement inside a client's session behind its back (what a pooler resetting the session does).
 * A client that gives up on a blackholed connection leaves its backend running on the server.
 * Point the module's `listener` option at `{ host: '127.0.0.1', port: proxy.port }`.
 */
export class TcpProxy {
  private server?: Server;
  private readonly pairs = new Set<Pair>();
  private refusing = false;
  private blackholed = false;
  /** Connections past this many accepted ones are held as while blackholed (see {@link holdAfter}). */
  private holdFrom = Number.POSITIVE_INFINITY;
  private latencyMs = 0;
  /** Connections accepted and forwarded so far. */
  accepted = 0;
  /** Connections closed on arrival while refusing. */
  refused = 0;
  /** Connections accepted while blackholed, held open and never forwarded. */
  held = 0;
  /** The SQL text of every statement clients sent through the proxy, in order, without a leading comment. */
  readonly queries: string[] = [];
  /**
   * Server-side sockets of connections whose client closed while blackholed: as with a dropped
   * flow, the server never learns, and its backend lives on until {@link releaseOrphans} or {@link stop}.
   */
  private readonly orphans = new Set<Socket>();
  /** Client sockets whose client closed its side over a dead network: never answered, until {@link stop}. */
  private readonly halfClosed = new Set<Socket>();

  constructor(
    private upstreamHost: string,
    private upstreamPort: number,
  ) {}

  /**
   * Sends new connections to another server from now on, as a DNS name or HAProxy does after a
   * failover; connections already open stay where they are.
   */
  retarget(host: string, port: number): void {
    this.upstreamHost = host;
    this.upstreamPort = port;
  }

  /** Proxies to the host and port of a connection string. */
  static forUrl(url: string): TcpProxy {
    const parsed = new URL(url);
    return new TcpProxy(parsed.hostname, Number(parsed.port || 5432));
  }

  get port(): number {
    return (this.server!.address() as { port: number }).port;
  }

  /** `url` with its host and port replaced by the proxy's. */
  url(url: string): string {
    const parsed = new URL(url);
    parsed.hostname = '127.0.0.1';
    parsed.port = String(this.port);
    return parsed.toString();
  }

  /** Server sides left open by clients that closed while blackholed (see {@link orphans}). */
  get orphaned(): number {
    return this.orphans.size;
  }

  /** Sockets open through the proxy (client and upstream sides), to check that nothing leaked. */
  get openSockets(): number {
    let open = 0;
    for (const pair of this.pairs) open += (pair.client.destroyed ? 0 : 1) + (pair.upstream && !pair.upstream.destroyed ? 1 : 0);
    return open;
  }

  async start(): Promise<this> {
    // Half-open allowed: a client that closes its side while blackholed gets no FIN back, as over a dead network.
    this.server = createServer({ allowHalfOpen: true }, (client) => this.accept(client));
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    return this;
  }

  /** While true, new connections are closed as soon as they arrive (the server seems down). */
  refuse(refusing: boolean): void {
    this.refusing = refusing;
  }

  /**
   * While true, nothing is forwarded in either direction and new connections are held open
   * without ever reaching the server; sockets stay open, as with a dead NAT entry or a
   * partitioned network. Connections that were blackholed stay dead afterwards.
   */
  blackhole(blackholed: boolean): void {
    this.blackholed = blackholed;
  }

  /**
   * Forwards the next `count` new connections, then holds every later one open without ever
   * reaching the server (as {@link blackhole} does to new connections), while the forwarded
   * ones go on: a second connection that hangs beside a healthy first one.
   */
  holdAfter(count: number): void {
    this.holdFrom = this.accepted + count;
  }

  /** Delays every forwarded chunk by `ms`, keeping order. */
  latency(ms: number): void {
    this.latencyMs = ms;
  }

  /** Closes every connection abruptly (a network reset). */
  resetAll(): void {
    for (const pair of this.pairs) {
      pair.client.destroy();
      pair.upstream?.destroy();
    }
  }

  /**
   * Runs `sql` (a simple statement returning no rows, such as `UNLISTEN *`) in the session of
   * every forwarded connection, as soon as it is idle, and hides the reply from the client.
   * Resolves once it has been sent on every connection.
   */
  async inject(sql: string): Promise<number> {
    const body = Buffer.from(`${sql}\0`);
    const message = Buffer.alloc(5 + body.length);
    message.write('Q', 0);
    message.writeInt32BE(4 + body.length, 1);
    body.copy(message, 5);
    const targets = [...this.pairs].filter((pair) => pair.upstream && !pair.upstream.destroyed);
    await Promise.all(
      targets.map(async (pair) => {
        // Sent only when the session is idle: the server then answers it before anything the client sends next.
        while (!pair.idle) {
          if (pair.client.destroyed) return;
          await new Promise((resolve) => setImmediate(resolve));
        }
        pair.swallow += 1;
        pair.upstream!.write(message);
      }),
    );
    return targets.length;
  }

  /**
   * Closes the server sides left open by clients that closed while blackholed ({@link orphaned}),
   * as a dead flow is torn down in the end (a keepalive timeout, say).
   */
  releaseOrphans(): void {
    for (const orphan of this.orphans) orphan.destroy();
    this.orphans.clear();
  }

  async stop(): Promise<void> {
    this.resetAll();
    this.releaseOrphans();
    for (const client of this.halfClosed) client.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  private accept(client: Socket): void {
    client.on('error', () => undefined);
    if (this.refusing) {
      this.refused += 1;
      client.destroy();
      return;
    }
    const pair: Pair = { client, pending: Buffer.alloc(0), idle: false, swallow: 0, sent: Buffer.alloc(0), startupSeen: false };
    this.pairs.add(pair);
    const gone = () => {
      if (!this.pairs.delete(pair)) return;
      const { upstream } = pair;
      if (!upstream || upstream.destroyed) return;
      // Blackholed, the close never reaches the server: its side stays open and unread, as after a
      // partition (a backend writing to it blocks once the socket buffers are full).
      if (this.blackholed) {
        upstream.pause();
        this.orphans.add(upstream);
        upstream.once('close', () => this.orphans.delete(upstream));
      } else upstream.destroy();
    };
    client.on('close', gone);
    client.on('end', () => {
      if (pair.upstream && !this.blackholed) return void pair.upstream.end();
      // Over a dead network no FIN goes back: a client that only ended its side waits on, half-closed.
      this.halfClosed.add(client);
      client.once('close', () => this.halfClosed.delete(client));
      gone();
    });
    if (this.blackholed || this.accepted >= this.holdFrom) {
      this.held += 1;
      client.resume(); // read and discard, so that the proxy notices when the client gives up
      return;
    }
    this.accepted += 1;
    const upstream = createConnection(this.upstreamPort, this.upstreamHost);
    pair.upstream = upstream;
    upstream.on('error', () => undefined);
    upstream.on('close', () => client.destroy());
    client.on('data', (chunk) => {
      pair.idle = false;
      this.record(pair, chunk);
      this.forward(upstream, chunk);
    });
    upstream.on('data', (chunk) => this.fromUpstream(pair, chunk));
  }

  /** Splits the server's stream into messages, to know when the session is idle and to hide injected replies. */
  private fromUpstream(pair: Pair, chunk: Buffer): void {
    pair.pending = pair.pending.length ? Buffer.concat([pair.pending, chunk]) : chunk;
    const out: Buffer[] = [];
    let offset = 0;
    while (pair.pending.length - offset >= 5) {
      const length = pair.pending.readInt32BE(offset + 1);
      if (pair.pending.length - offset < 1 + length) break;
      const message = pair.pending.subarray(offset, offset + 1 + length);
      offset += 1 + length;
      const type = String.fromCharCode(message[0]!);
      if (pair.swallow > 0 && (type === 'C' || type === 'Z')) {
        if (type === 'Z') pair.swallow -= 1;
        continue;
      }
      if (type === 'Z') pair.idle = true;
      out.push(message);
    }
    pair.pending = pair.pending.subarray(offset);
    if (out.length) this.forward(pair.client, Buffer.concat(out));
  }

  /** Notes the SQL of simple (Q) and extended (P) queries the client sends. */
  private record(pair: Pair, chunk: Buffer): void {
    pair.sent = pair.sent.length ? Buffer.concat([pair.sent, chunk]) : chunk;
    let offset = 0;
    if (!pair.startupSeen) {
      if (pair.sent.length < 4) return;
      offset = pair.sent.readInt32BE(0);
      pair.startupSeen = true;
    }
    while (pair.sent.length - offset >= 5) {
      const length = pair.sent.readInt32BE(offset + 1);
      if (pair.sent.length - offset < 1 + length) break;
      const type = String.fromCharCode(pair.sent[offset]!);
      const body = pair.sent.subarray(offset + 5, offset + 1 + length);
      if (type === 'Q') this.queries.push(withoutComment(body.toString('utf8', 0, body.length - 1)));
      if (type === 'P') this.queries.push(withoutComment(body.toString('utf8', body.indexOf(0) + 1, body.indexOf(0, body.indexOf(0) + 1))));
      offset += 1 + length;
    }
    pair.sent = pair.sent.subarray(offset);
  }

  private forward(to: Socket, chunk: Buffer): void {
    if (this.blackholed) return;
    if (this.latencyMs > 0) setTimeout(() => this.blackholed || to.write(chunk), this.latencyMs);
    else to.write(chunk);
  }
}
