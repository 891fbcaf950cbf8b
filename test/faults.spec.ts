import { Injectable } from '@nestjs/common';
import { firstValueFrom, toArray, take } from 'rxjs';
import { OnOutOfSync, PglnTimeoutError, type OutOfSyncEvent } from '../lib/index.js';
import { buildTestApp, createTestApp, proxyForEachTest, throughProxy, type TestApp } from './support/app.js';
import { adminPool, databaseUrl, terminate, unique } from './support/database.js';
import { recorder } from './support/recorder.js';
import { TcpProxy } from './support/tcp-proxy.js';
import { trackTimers } from './support/timers.js';
import { Inbox, StateLog, deferred, waitFor } from './support/wait.js';

const admin = adminPool();
afterAll(() => admin.end());

let proxy: TcpProxy;
proxyForEachTest((started) => (proxy = started));


/**
 * Creates an app whose backoff delays are all 99.9% of their cap (the random source its backoff
 * takes at creation), so that a test can rely on a retry being far off.
 */
async function withBackoffNearItsCap(create: () => Promise<TestApp>): Promise<TestApp> {
  const random = Math.random;
  Math.random = () => 0.999;
  try {
    return await create();
  } finally {
    Math.random = random;
  }
}

/** Waits until the app is live again after a loss it has already noticed, and proves delivery works. */
async function expectRecovered(t: TestApp, channel: string, received: Inbox<string>, payload: string) {
  await waitFor('the listener to be live again', () => t.pgln.state === 'live');
  await t.pgln.notify(channel, payload);
  await waitFor(`"${payload}" to be delivered`, () => received.items.includes(payload));
}

describe('liveness check', () => {
  it('replaces a blackholed (half-open) connection once the health check gets no answer', async () => {
    const channel = unique('blackhole');
    const Recorder = recorder(channel);
    const t = await createTestApp(
      { providers: [Recorder] },
      { ...throughProxy(proxy), healthCheck: { intervalMs: 100, timeoutMs: 200 } },
    );
    const recorded = t.get(Recorder);
    try {
      proxy.blackhole(true);
      await waitFor('the dead connection to be noticed', () => t.pgln.state === 'reconnecting');
      expect(t.logs.messages('warn')).toContain(
        'live -> reconnecting: connection lost: Health check got no answer within 200 ms (healthCheck.timeoutMs); the connection is considered dead',
      );
      proxy.blackhole(false);
      await expectRecovered(t, channel, recorded.received, 'after');
      expect(recorded.reasons).toEqual(['connect', 'reconnect']);
      // The half-open sockets were destroyed, not left to the operating system.
      await waitFor('only the new connection to remain open', () => proxy.openSockets === 2);
    } finally {
      await t.app.close();
    }
  });

  it('replaces a session that silently lost its LISTENs (as a pooler resetting it would)', async () => {
    const channel = unique('reset');
    const Recorder = recorder(channel);
    const t = await createTestApp(
      { providers: [Recorder] },
      { ...throughProxy(proxy), healthCheck: { intervalMs: 50, timeoutMs: 1000 } },
    );
    const recorded = t.get(Recorder);
    const states = new StateLog(t.pgln);
    try {
      expect(await proxy.inject('UNLISTEN *')).toBe(1);
      await states.reach('reconnecting');
      expect(t.logs.messages('warn')).toContain(
        `live -> reconnecting: connection lost: the LISTEN session no longer listens on "${channel}"`,
      );
      await expectRecovered(t, channel, recorded.received, 'after');
      expect(recorded.reasons).toEqual(['connect', 'reconnect']);
    } finally {
      await t.app.close();
    }
  });

  it('closes without hanging when the connection is dead', async () => {
    const t = await createTestApp({ providers: [recorder(unique('dead'))] }, { ...throughProxy(proxy), healthCheck: { intervalMs: 60_000, timeoutMs: 300 } });
    proxy.blackhole(true);
    await t.app.close();
    expect(t.pgln.state).toBe('closed');
    await waitFor('the proxied sockets to close', () => proxy.openSockets === 0);
  });
});

describe('reconnect attempts', () => {
  it('are numbered in the log from 1 after each loss, as at startup', async () => {
    const t = await createTestApp({ providers: [recorder(unique('numbered'))] }, throughProxy(proxy));
    try {
      proxy.refuse(true);
      proxy.resetAll();
      const attempts = () => t.logs.messages('warn').map((line) => /\(attempt (\d+)\)/.exec(line)?.[1]).filter(Boolean).map(Number);
      await waitFor('three failed attempts', () => attempts().length >= 3);
      expect(attempts().slice(0, 3)).toEqual([1, 2, 3]);
      proxy.refuse(false);
      await waitFor('live again', () => t.pgln.state === 'live');
      // The next loss starts again from 1.
      const before = attempts().length;
      proxy.refuse(true);
      proxy.resetAll();
      await waitFor('two more failed attempts', () => attempts().length >= before + 2);
      expect(attempts().slice(before, before + 2)).toEqual([1, 2]);
      proxy.refuse(false);
      await waitFor('live again', () => t.pgln.state === 'live');
    } finally {
      await t.app.close();
    }
  });
});

describe('reconnect attempts over a dead network', () => {
  it('time out and are retried even with listener.connectionTimeoutMillis given as undefined (a config value not set)', async () => {
    const channel = unique('dead_network');
    const Recorder = recorder(channel);
    const t = await createTestApp(
      { providers: [Recorder] },
      { listener: { ...throughProxy(proxy).listener, connectionTimeoutMillis: undefined }, healthCheck: { timeoutMs: 200 } },
    );
    try {
      proxy.blackhole(true);
      proxy.resetAll();
      // Held by the dead network, each attempt must still end: pg without a timeout would wait forever.
      await waitFor('a reconnect attempt to time out', () =>
        t.logs.messages('warn').some((line) => /^Cannot connect to .* \(attempt 1\): .*timeout/i.test(line)),
      );
      proxy.blackhole(false);
      await waitFor('the listener to be live again', () => t.pgln.state === 'live');
      expect(t.get(Recorder).reasons).toEqual(['connect', 'reconnect']);
    } finally {
      await t.app.close();
    }
  });
});

describe('lifecycle edges', () => {
  it('closes during the backoff between two refused attempts, leaving no timer or socket', async () => {
    const tracked = trackTimers();
    try {
      const t = await withBackoffNearItsCap(() =>
        createTestApp({ providers: [recorder(unique('backoff'))] }, { ...throughProxy(proxy), reconnect: { initialDelayMs: 60_000, maxDelayMs: 60_000 } }),
      );
      proxy.refuse(true);
      proxy.resetAll();
      // The first attempt after the loss is immediate and refused; the next waits most of a minute.
      await waitFor('a refused attempt', () => t.logs.messages('warn').some((line) => /retrying in \d+ ms$/.test(line)));
      const attempts = proxy.refused;
      await t.app.close();
      // Closed without waiting for the retry, and none was made.
      expect(tracked.pending()).toEqual([]);
      expect(proxy.refused).toBe(attempts);
    } finally {
      tracked.stop();
    }
    expect(proxy.openSockets).toBe(0);
  });

  it('closes during a connection attempt that hangs', async () => {
    const t = await createTestApp({ providers: [recorder(unique('connecting'))] }, { ...throughProxy(proxy), healthCheck: { intervalMs: 60_000, timeoutMs: 60_000 } });
    proxy.blackhole(true);
    proxy.resetAll();
    await waitFor('a reconnect attempt to hang in the proxy', () => proxy.held >= 1);
    await t.app.close();
    await waitFor('the hanging socket to be closed', () => proxy.openSockets === 0);
  });

  it('closes during an out-of-sync handler: waits for it, then disconnects', async () => {
    const channel = unique('closing');
    const release = deferred();
    const events = new Inbox<string>();
    @Injectable()
    class Slow {
      @OnOutOfSync(channel)
      async resync(event: OutOfSyncEvent) {
        if (event.reason !== 'reconnect') return;
        events.push('resync:start');
        await release.promise;
        events.push('resync:end');
      }
    }
    const t = await createTestApp({ providers: [Slow] }, throughProxy(proxy));
    proxy.resetAll();
    await events.until(1);
    const closing = t.app.close().then(() => events.push('closed'));
    await waitFor('shutdown to begin', () => t.pgln.state === 'closed');
    release.resolve();
    await closing;
    expect(events.items).toEqual(['resync:start', 'resync:end', 'closed']);
  });

  it('closes while a failing out-of-sync handler waits to be retried, without waiting for the retry', async () => {
    const channel = unique('retrying');
    const failures = new Inbox<string>();
    @Injectable()
    class Failing {
      @OnOutOfSync(channel)
      resync(event: OutOfSyncEvent) {
        if (event.reason === 'reconnect') {
          failures.push('failed');
          throw new Error('still broken');
        }
      }
    }
    // Every backoff delay close to its cap, a minute: the retry certainly falls after close.
    const t = await withBackoffNearItsCap(() =>
      createTestApp({ providers: [Failing] }, { ...throughProxy(proxy), reconnect: { initialDelayMs: 60_000, maxDelayMs: 60_000 } }),
    );
    const tracked = trackTimers();
    try {
      proxy.resetAll();
      await failures.until(1);
      await t.app.close();
      // Not waited for (shutdownTimeoutMs would have run out), and its timer is gone.
      expect(t.logs.messages('warn').filter((line) => line.startsWith('Handlers still running'))).toEqual([]);
      expect(tracked.pending()).toEqual([]);
      expect(failures.items).toEqual(['failed']);
    } finally {
      tracked.stop();
    }
  });

  it('accepts listen() during a reconnect and resolves it once the connection is back', async () => {
    const t = await createTestApp({ providers: [recorder(unique('other'))] }, throughProxy(proxy));
    try {
      proxy.refuse(true);
      proxy.resetAll();
      await waitFor('the loss to be noticed', () => t.pgln.state === 'reconnecting');
      const channel = unique('during');
      const reasons: string[] = [];
      const received = new Inbox<string>();
      const listening = t.pgln.listen(channel, {
        onOutOfSync: (event: OutOfSyncEvent) => void reasons.push(event.reason),
        onNotification: received.push,
      });
      proxy.refuse(false);
      await listening;
      expect(reasons).toEqual(['listen']);
      await t.pgln.notify(channel, 'x');
      expect(await received.until(1)).toEqual(['x']);
    } finally {
      await t.app.close();
    }
  });

  it('accepts unlisten() during a reconnect: the channel is not LISTENed again', async () => {
    const dropped = unique('dropped');
    const kept = unique('kept');
    const Dropped = recorder(dropped);
    const Kept = recorder(kept);
    const t = await createTestApp({ providers: [Dropped, Kept] }, throughProxy(proxy));
    try {
      proxy.refuse(true);
      proxy.resetAll();
      await waitFor('the loss to be noticed', () => t.pgln.state === 'reconnecting');
      await t.pgln.unlisten(dropped);
      const sent = proxy.queries.length;
      proxy.refuse(false);
      await expectRecovered(t, kept, t.get(Kept).received, 'kept');
      expect(proxy.queries.slice(sent).filter((sql) => sql.startsWith('LISTEN'))).toEqual([`LISTEN "${kept}"`]);
      expect(t.get(Dropped).reasons).toEqual(['connect']);
    } finally {
      await t.app.close();
    }
  });

  it.each([
    ['pg_terminate_backend (an error, then an end)', (t: TestApp) => terminate(admin, `${t.appName}-listener`)],
    ['a network reset (the socket closes)', async () => proxy.resetAll()],
  ])('reconnects exactly once after %s', async (_, fault) => {
    const channel = unique('once');
    const Recorder = recorder(channel);
    const t = await createTestApp({ providers: [Recorder] }, throughProxy(proxy));
    // Connections so far: the LISTEN connection, and the startup probe's short-lived one.
    const connections = proxy.accepted;
    try {
      const states = new StateLog(t.pgln);
      await fault(t);
      await states.reach('live', 2);
      await expectRecovered(t, channel, t.get(Recorder).received, 'after');
      states.stop();
      expect(proxy.accepted - connections).toBe(1);
      expect(states.states).toEqual(['live', 'reconnecting', 'syncing', 'live']);
      expect(t.get(Recorder).reasons).toEqual(['connect', 'reconnect']);
    } finally {
      await t.app.close();
    }
  });
});

describe('notify while the database is unreachable', () => {
  it('rejects after notifyTimeoutMs on a pooled connection that went half-open, and close does not hang', async () => {
    const channel = unique('notify');
    const t = await createTestApp(
      {},
      {
        pool: { connectionString: proxy.url(databaseUrl()), max: 1 },
        notifyTimeoutMs: 200,
        healthCheck: { intervalMs: 60_000, timeoutMs: 200 },
      },
    );
    await t.pgln.notify(channel, 'opens the pooled connection');
    proxy.blackhole(true);
    const failure = await t.pgln.notify(channel, 'never answered').catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(PglnTimeoutError);
    expect((failure as Error).message).toBe(
      `notify on "${channel}" got no answer within notifyTimeoutMs (200 ms); it may or may not have been sent`,
    );
    await t.app.close(); // ends the pool: the hung connection was destroyed, not left checked out
    await waitFor('the proxied sockets to close', () => proxy.openSockets === 0);
  });

  it('rejects with the driver error, or a PglnTimeoutError when the pool’s own connect timeout ran out, queues nothing, and works again afterwards', async () => {
    const channel = unique('notify');
    const Recorder = recorder(channel);
    const t = await createTestApp(
      { providers: [Recorder] },
      {
        pool: { connectionString: proxy.url(databaseUrl()), connectionTimeoutMillis: 300 },
        healthCheck: { intervalMs: 100, timeoutMs: 300 },
      },
    );
    try {
      proxy.refuse(true);
      proxy.resetAll();
      await expect(t.pgln.notify(channel, 'refused')).rejects.toThrow(/Connection terminated/);

      proxy.refuse(false);
      proxy.blackhole(true);
      const attempts = Array.from({ length: 20 }, (_, i) => t.pgln.notify(channel, `hung ${i}`));
      const results = await Promise.allSettled(attempts);
      expect(results.every((result) => result.status === 'rejected')).toBe(true);
      const first = (results[0] as PromiseRejectedResult).reason as Error;
      expect(first).toBeInstanceOf(PglnTimeoutError);
      expect(first.message).toMatch(/got no connection from the pool within its connectionTimeoutMillis \(300 ms\), so nothing was sent/);
      expect(String(first.cause)).toMatch(/Connection terminated due to connection timeout/);

      proxy.blackhole(false);
      await expectRecovered(t, channel, t.get(Recorder).received, 'back');
      expect(t.get(Recorder).received.items).toEqual(['back']);
    } finally {
      await t.app.close();
    }
  });
});

describe('state', () => {
  it('reports the current state to a new subscriber, logs each transition once, and completes at close', async () => {
    const { app, pgln, logs } = await buildTestApp({ providers: [recorder(unique('state'))] });
    const all = firstValueFrom(pgln.state$.pipe(toArray()));
    expect(await firstValueFrom(pgln.state$.pipe(take(1)))).toMatchObject({ state: 'idle', previous: 'idle' });
    await app.init();
    await app.close();
    const states = (await all).map((change) => `${change.previous}->${change.state}`);
    expect(states).toEqual(['idle->idle', 'idle->connecting', 'connecting->syncing', 'syncing->live', 'live->closed']);
    const lines = logs.lines.filter((line) => line.context === 'PglnService').map((line) => line.message.split(':')[0]);
    expect(lines).toEqual(['idle -> connecting', 'connecting -> syncing', 'syncing -> live', 'live -> closed']);
  });
});

describe('any query on the LISTEN session that gets no answer replaces it', () => {
  it('an UNLISTEN that times out replaces the connection (no health check needed), and later ones do not wait again', async () => {
    const kept = unique('kept');
    const Recorder = recorder(kept);
    // The health check is a minute away: only the UNLISTEN can notice the dead connection.
    const t = await createTestApp({ providers: [Recorder] }, { ...throughProxy(proxy), healthCheck: { intervalMs: 60_000, timeoutMs: 300 } });
    const recorded = t.get(Recorder);
    try {
      const names = [unique('drop'), unique('drop'), unique('drop')];
      for (const name of names) await t.pgln.listen(name, { onNotification: () => undefined });
      const states = new StateLog(t.pgln);
      proxy.blackhole(true);
      await Promise.all(names.map((name) => t.pgln.unlisten(name)));
      await states.reach('reconnecting');
      const lost = t.logs.messages('warn').filter((line) => line.includes('connection lost'));
      // One UNLISTEN timed out; the two queued behind it failed at once on the destroyed connection.
      expect(lost).toEqual(['live -> reconnecting: connection lost: UNLISTEN got no answer within 300 ms (healthCheck.timeoutMs); the connection is considered dead']);
      proxy.blackhole(false);
      await expectRecovered(t, kept, recorded.received, 'after');
      expect(recorded.reasons).toEqual(['connect', 'reconnect']);
      // The unlistened channels were not LISTENed again.
      const relistened = proxy.queries.filter((sql) => names.some((name) => sql.includes(`LISTEN "${name}"`)) && !sql.startsWith('UNLISTEN'));
      expect(relistened).toHaveLength(3);
    } finally {
      await t.app.close();
    }
  });
});

describe('a resync that has not started yet is superseded by a newer one', () => {
  /** Kills the LISTEN backend and waits until the new connection has LISTENed (its resync is queued by then). */
  async function reconnect(t: TestApp, states: StateLog): Promise<void> {
    const before = states.count('syncing');
    expect(await terminate(admin, `${t.appName}-listener`)).toBe(1);
    await states.reach('syncing', before + 1);
  }

  it('three reconnects while the first resync runs make one more run, not three', async () => {
    const channel = unique('superseded');
    const t = await createTestApp();
    try {
      const gate = deferred();
      const reasons = new Inbox<string>();
      await t.pgln.listen(channel, {
        onOutOfSync: async (event: OutOfSyncEvent) => {
          reasons.push(event.reason);
          if (reasons.items.length === 2) await gate.promise; // the first reconnect's resync runs long
        },
      });
      const states = new StateLog(t.pgln);
      await reconnect(t, states);
      await reasons.until(2);
      await reconnect(t, states);
      await reconnect(t, states);
      await reconnect(t, states);
      gate.resolve();
      await states.reach('live', 2); // the StateLog began with the first live
      expect(reasons.items).toEqual(['listen', 'reconnect', 'reconnect']);
    } finally {
      await t.app.close();
    }
  });

  it('reconnects behind a hung notification handler leave one resync waiting, whatever their number', async () => {
    const channel = unique('hung');
    const t = await createTestApp();
    try {
      const gate = deferred();
      const hanging = deferred();
      const reasons: string[] = [];
      const received = new Inbox<string>();
      await t.pgln.listen(channel, {
        onOutOfSync: (event: OutOfSyncEvent) => void reasons.push(event.reason),
        onNotification: async (payload: string) => {
          if (payload === 'hang') {
            hanging.resolve();
            await gate.promise;
          }
          received.push(payload);
        },
      });
      await t.pgln.notify(channel, 'hang');
      await hanging.promise;
      const states = new StateLog(t.pgln);
      for (let i = 0; i < 5; i++) await reconnect(t, states);
      gate.resolve();
      await states.reach('live', 2); // the StateLog began with the first live
      expect(reasons).toEqual(['listen', 'reconnect']);
      await t.pgln.notify(channel, 'after');
      expect(await received.until(2)).toEqual(['hang', 'after']);
    } finally {
      await t.app.close();
    }
  });
});

describe('a handler that awaits listen() on its own channel', () => {
  it('does not wait on itself while the connection is down: the new listener syncs after the next LISTEN', async () => {
    const channel = unique('self_listen_down');
    const t = await createTestApp({}, throughProxy(proxy));
    try {
      const inside = deferred();
      const gate = deferred();
      const inner = new Inbox<string>();
      await t.pgln.listen(channel, {
        onNotification: async (payload: string) => {
          if (payload !== 'start') return;
          inside.resolve();
          await gate.promise;
          inner.push('calling listen()');
          await t.pgln.listen(channel, {
            onOutOfSync: (event: OutOfSyncEvent) => void inner.push(`sync:${event.reason}`),
            onNotification: (innerPayload: string) => void inner.push(innerPayload),
          });
          inner.push('listen() resolved');
        },
      });
      await t.pgln.notify(channel, 'start');
      await inside.promise;
      proxy.refuse(true);
      proxy.resetAll();
      await waitFor('the connection to be lost', () => t.pgln.state === 'reconnecting');
      gate.resolve();
      await inner.until(1);
      proxy.refuse(false);
      expect(await inner.until(3)).toEqual(['calling listen()', 'sync:listen', 'listen() resolved']);
      await waitFor('the listener to be live', () => t.pgln.state === 'live');
      await t.pgln.notify(channel, 'after');
      expect(await inner.until(4)).toEqual(['calling listen()', 'sync:listen', 'listen() resolved', 'after']);
    } finally {
      await t.app.close();
    }
  });
});
