import { createConnection, createServer, type Server, type Socket } from 'node:net';

/**
 * An in-process TCP proxy to put between the LISTEN connection and PostgreSQL, so a test can
 * hold an outage open for as long as it needs. Point the module's `listener` option at
 * `{ host: '127.0.0.1', port: proxy.port }`.
 */
export class TcpProxy {
  private server?: Server;
  private readonly sockets = new Set<Socket>();
  private refusing = false;
  /** Connections accepted and forwarded so far. */
  accepted = 0;
  /** Connections closed on arrival while refusing. */
  refused = 0;

  constructor(
    private readonly upstreamHost: string,
    private readonly upstreamPort: number,
  ) {}

  /** Proxies to the host and port of a connection string. */
  static forUrl(url: string): TcpProxy {
    const parsed = new URL(url);
    return new TcpProxy(parsed.hostname, Number(parsed.port || 5432));
  }

  get port(): number {
    return (this.server!.address() as { port: number }).port;
  }

  async start(): Promise<this> {
    this.server = createServer((client) => this.accept(client));
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    return this;
  }

  /** While true, new connections are closed as soon as they arrive (the server seems down). */
  refuse(refusing: boolean): void {
    this.refusing = refusing;
  }

  /** Closes every proxied connection abruptly (a network reset). */
  resetAll(): void {
    for (const socket of this.sockets) socket.destroy();
  }

  async stop(): Promise<void> {
    this.resetAll();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  private accept(client: Socket): void {
    if (this.refusing) {
      this.refused += 1;
      client.destroy();
      return;
    }
    this.accepted += 1;
    const upstream = createConnection(this.upstreamPort, this.upstreamHost);
    for (const socket of [client, upstream]) {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
      socket.on('error', () => undefined);
    }
    client.pipe(upstream).on('close', () => client.destroy());
    upstream.pipe(client).on('close', () => upstream.destroy());
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  }
}
