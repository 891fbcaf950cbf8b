import { Injectable } from '@nestjs/common';
import type { Socket } from 'node:net';
import pg from 'pg';
import { OnNotification, PglnClosedError, PglnTimeoutError, type PglnModuleOptions } from '../lib/index.js';
import { buildTestApp, createTestApp, throughProxy } from './support/app.js';
import { trackTimers } from './support/timers.js';
import { TcpProxy } from './support/tcp-proxy.js';
import { adminPool, backends, databaseUrl, unique } from './support/database.js';
import { Inbox, deferred, waitFor } from './support/wait.js';
import { recorder } from './support/recorder.js';

const admin = adminPool();
afterAll(() => admin.end());

function blockingHandler(channel: string, release: Promise<void>, events: Inbox<string>) {
  @Injectable()
  class Blocking {
    @OnNotification(channel)
    async handle(payload: string) {
      events.push(`handler:${payload}:start`);
      await release;
      events.push(`handler:${payload}:end`);
    }
  }
  return Blocking;
}

describe('app.close()', () => {
  it('waits for a running handler, then UNLISTENs and disconnects', async () => {
    const channel = unique('closing');
    const release = deferred();
    const events = new Inbox<string>();
    const proxy = await TcpProxy.forUrl(databaseUrl()).start();
    const t = await createTestApp({ providers: [blockingHandler(channel, release.promise, events)] }, throughProxy(proxy));
    await t.pgln.notify(channel, '1');
    await events.until(1);

    const closing = t.app.close().then(() => events.push('closed'));
    await waitFor('shutdown to begin', () => t.pgln.state === 'closed');
    expect(await backends(admin, `${t.appName}-listener`)).toHaveLength(1);
    release.resolve();
    await closing;
    expect(events.items).toEqual(['handler:1:start', 'handler:1:end', 'closed']);
    expect(proxy.queries.at(-1)).toBe('UNLISTEN *');
    expect(proxy.openSockets).toBe(0);
    await proxy.stop();
    await waitFor('no backend of the app to remain', async () => {
      const [listener, pool] = await Promise.all([backends(admin, `${t.appName}-listener`), backends(admin, t.appName)]);
      return listener.length === 0 && pool.length === 0;
    });
  });

  it('gives up waiting after shutdownTimeoutMs, with a warning', async () => {
    const channel = unique('stuck');
    const release = deferred();
    const events = new Inbox<string>();
    const t = await createTestApp(
      { providers: [blockingHandler(channel, release.promise, events)] },
      { shutdownTimeoutMs: 50 },
    );
    try {
      await t.pgln.notify(channel, '1');
      await events.until(1);
      await t.app.close();
      expect(t.logs.messages('warn')).toContain(
        'Handlers still running after shutdownTimeoutMs (50 ms); closing the connection anyway',
      );
      expect(events.items).toEqual(['handler:1:start']);
    } finally {
      release.resolve();
    }
  });

  it('a listen() called from a state$ subscriber on "closed" rejects with a PglnClosedError, and close completes', async () => {
    const t = await createTestApp();
    let late: Promise<unknown> | undefined;
    const subscription = t.pgln.state$.subscribe(({ state }) => {
      if (state === 'closed') late = t.pgln.listen(unique('from_state'), { onNotification: () => undefined }).catch((error: unknown) => error);
    });
    await t.app.close();
    subscription.unsubscribe();
    expect(await late).toBeInstanceOf(PglnClosedError);
  });

  it('after close, listen() rejects with a PglnClosedError and unlisten() does nothing', async () => {
    const t = await createTestApp();
    await t.app.close();
    const late = t.pgln.listen(unique('late'), { onNotification: () => undefined });
    await expect(late).rejects.toBeInstanceOf(PglnClosedError);
    await expect(late).rejects.toThrow(/Cannot listen on ".*": the Pgln listener has been closed/);
    await expect(t.pgln.unlisten(unique('late'))).resolves.toBeUndefined();
  });
});

/** Listener settings that bypass a proxy (host and port of the test server). */
function directListener(): PglnModuleOptions['listener'] {
  const url = new URL(databaseUrl());
  return { host: url.hostname, port: Number(url.port || 5432) };
}

/**
 * A `Client` for a `PoolConfig` that records every connection the pool makes, to check from inside
 * the process that its socket is gone: over a dead network no FIN ever comes back, so a client
 * that only ended politely keeps its socket (and the process) open.
 */
function recordingClients() {
  const clients: pg.Client[] = [];
  class Recording extends pg.Client {
    constructor(config?: pg.ClientConfig) {
      super(config);
      clients.push(this);
    }
  }
  const socket = (client: pg.Client) => (client as unknown as { connection: { stream: Socket } }).connection.stream;
  return { Client: Recording, clients, open: () => clients.filter((client) => !socket(client).destroyed).length };
}

describe('app.close() stays bounded, and leaves no socket, whatever the network does to the module’s pool', () => {
  let proxy: TcpProxy;
  beforeEach(async () => {
    proxy = await TcpProxy.forUrl(databaseUrl()).start();
  });
  afterEach(() => proxy.stop());

  it('closes idle pooled connections on a dead network (no FIN ever comes back)', async () => {
    const recording = recordingClients();
    const t = await createTestApp(
      {},
      { pool: { connectionString: proxy.url(databaseUrl()), Client: recording.Client }, listener: directListener(), healthCheck: { timeoutMs: 200 } },
    );
    await t.pgln.notify(unique('dead_idle'), 'leaves an idle connection in the pool');
    expect(recording.open()).toBe(1);
    proxy.blackhole(true);
    await t.app.close();
    await waitFor('the pooled connection’s socket to be closed', () => recording.open() === 0);
  });

  it('ends while the pool’s connection attempt hangs, however long the pool would wait for it', async () => {
    const recording = recordingClients();
    const t = await createTestApp(
      {},
      {
        pool: { connectionString: proxy.url(databaseUrl()), connectionTimeoutMillis: 60_000, Client: recording.Client },
        listener: directListener(),
        notifyTimeoutMs: 300,
        healthCheck: { timeoutMs: 200 },
      },
    );
    proxy.blackhole(true);
    await expect(t.pgln.notify(unique('dead_connect'), 'x')).rejects.toBeInstanceOf(PglnTimeoutError);
    expect(proxy.held).toBe(1);
    await t.app.close(); // pg-pool's end() alone waits for the attempt: 60 s
    await waitFor('the attempt’s socket to be closed', () => recording.open() === 0);
  });

  it('during the startup probe: its connection goes too, and no timer is left', async () => {
    // The LISTEN connection goes through; the probe's connection, the next one, hangs.
    proxy.holdAfter(1);
    const built = await buildTestApp(
      { providers: [recorder(unique('probed'))] },
      { ...throughProxy(proxy), healthCheck: { timeoutMs: 60_000 } },
    );
    const tracked = trackTimers();
    try {
      const init = built.app.init().then(
        () => undefined,
        (error: unknown) => error,
      );
      await waitFor('the probe’s connection to hang', () => proxy.held === 1);
      await built.app.close();
      expect(await init).toBeInstanceOf(PglnClosedError);
      await waitFor('every socket to be closed', () => proxy.openSockets === 0);
      expect(tracked.pending()).toEqual([]);
    } finally {
      tracked.stop();
    }
  });
});
