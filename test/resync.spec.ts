import { Injectable } from '@nestjs/common';
import { OnNotification, OnOutOfSync, PglnClosedError, defineChannel, type OutOfSyncEvent } from '../lib/index.js';
import { createTestApp } from './support/app.js';
import { adminPool, backends, databaseUrl, terminate, unique } from './support/database.js';
import { createProductsTable, dropProductsTable, productCacheFor, readTable } from './support/products.js';
import { TcpProxy } from './support/tcp-proxy.js';
import { Inbox, StateLog, deferred, waitFor } from './support/wait.js';

const admin = adminPool();
afterAll(() => admin.end());

/**
 * Sends `payloads` on `channel` and then `marker` on `side` in one transaction. Once `marker`
 * arrives on `side`, everything before it has reached the LISTEN connection too: the server
 * delivers a transaction's notifications in order.
 */
async function sendThenMark(channel: string, payloads: string[], side: string, marker: string) {
  const calls = payloads.map((_, i) => `pg_notify($1, $${i + 3})`).join(', ');
  await admin.query(`SELECT ${calls}, pg_notify($2, $${payloads.length + 3})`, [channel, side, ...payloads, marker]);
}

describe('out-of-sync handlers', () => {
  it('run before app.init() resolves, holding their channel while other channels flow', async () => {
    const held = unique('held');
    const side = unique('side');
    const events = new Inbox<string>();
    const sideSeen = new Inbox<string>();

    @Injectable()
    class Holder {
      @OnOutOfSync(held)
      async resync(event: OutOfSyncEvent) {
        events.push(`sync:${event.reason}:start`);
        const round = events.items.length;
        const marks = sideSeen.items.length + 1; // counted before sending: the mark may arrive before the reply
        await sendThenMark(held, [`${round}a`, `${round}b`], side, `mark${round}`);
        await sideSeen.until(marks);
        events.push(`sync:${event.reason}:end`);
      }
      @OnNotification(held)
      onHeld(payload: string) {
        events.push(`held:${payload}`);
      }
      @OnNotification(side)
      onSide(payload: string) {
        sideSeen.push(payload);
      }
    }

    const t = await createTestApp({ providers: [Holder] });
    try {
      // The side channel flowed while `held` was syncing; `held` was delivered only after.
      expect(events.items).toEqual(['sync:connect:start', 'sync:connect:end', 'held:1a', 'held:1b']);

      await terminate(admin, `${t.appName}-listener`);
      await events.until(8);
      expect(events.items.slice(4)).toEqual(['sync:reconnect:start', 'sync:reconnect:end', 'held:5a', 'held:5b']);
    } finally {
      await t.app.close();
    }
  });

  it('are retried with backoff while their channel stays held', async () => {
    const channel = unique('retry');
    const side = unique('side');
    const events = new Inbox<string>();
    const sideSeen = new Inbox<string>();
    let attempts = 0;

    @Injectable()
    class Flaky {
      @OnOutOfSync(channel)
      async resync() {
        attempts += 1;
        events.push(`sync:${attempts}`);
        if (attempts === 1) {
          await sendThenMark(channel, ['during-failure'], side, 'mark');
          await sideSeen.until(1);
        }
        if (attempts < 3) throw new Error(`database not ready (${attempts})`);
      }
      @OnNotification(channel)
      receive(payload: string) {
        events.push(`n:${payload}`);
      }
      @OnNotification(side)
      onSide(payload: string) {
        sideSeen.push(payload);
      }
    }

    const t = await createTestApp({ providers: [Flaky] });
    try {
      expect(events.items).toEqual(['sync:1', 'sync:2', 'sync:3', 'n:during-failure']);
      const errors = t.logs.messages('error');
      expect(errors).toHaveLength(2);
      expect(errors[0]).toContain(
        `Flaky.resync failed on channel "${channel}" (out-of-sync handler; notifications stay held and it is retried): Error: database not ready (1)`,
      );
      expect(t.pgln.state).toBe('live');
    } finally {
      await t.app.close();
    }
  });
});

describe('reconnect', () => {
  it('after pg_terminate_backend, resyncs so the cache equals the table, despite changes during the outage', async () => {
    const table = unique('products');
    const channel = unique('products');
    await createProductsTable(admin, table, channel);
    const proxy = await TcpProxy.forUrl(databaseUrl()).start();
    const ProductCache = productCacheFor(admin, table, channel);
    const t = await createTestApp(
      { providers: [ProductCache] },
      { listener: { host: '127.0.0.1', port: proxy.port } },
    );
    const cache = t.get(ProductCache);
    try {
      expect(cache.syncs).toEqual(['connect']);
      expect(cache.rows).toEqual(await readTable(admin, table));

      await admin.query(`UPDATE ${table} SET version = version + 1 WHERE id = 1`);
      await waitFor('a live change to reach the cache', () => cache.rows.get(1) === 2);

      // Outage: the backend is killed and reconnecting fails until the proxy lets it through.
      const connections = proxy.accepted; // the LISTEN connection, and the startup probe's
      proxy.refuse(true);
      expect(await terminate(admin, `${t.appName}-listener`)).toBe(1);
      await waitFor('reconnect attempts to be refused', () => proxy.refused >= 2);
      expect(t.pgln.state).toBe('reconnecting');
      await admin.query(`UPDATE ${table} SET version = version + 1 WHERE id <= 10`);
      await admin.query(`DELETE FROM ${table} WHERE id = 20`);
      await admin.query(`INSERT INTO ${table} (id, version) VALUES (21, 7)`);
      expect(cache.rows.get(21)).toBeUndefined();

      proxy.refuse(false);
      await waitFor('the listener to be live again', () => t.pgln.state === 'live');
      expect(cache.syncs).toEqual(['connect', 'reconnect']);
      expect(cache.rows).toEqual(await readTable(admin, table));

      // Live again: changes flow as before.
      await admin.query(`UPDATE ${table} SET version = 100 WHERE id = 5`);
      await waitFor('a change after the reconnect', () => cache.rows.get(5) === 100);
      expect(cache.rows).toEqual(await readTable(admin, table));
      expect(await backends(admin, `${t.appName}-listener`)).toHaveLength(1);
      // One loss, one reconnect: the refused attempts were retried, one connection got through.
      expect(proxy.accepted - connections).toBe(1);
      const failures = t.logs.messages('warn').filter((line) => line.startsWith('Cannot connect'));
      expect(failures.length).toBe(proxy.refused);
    } finally {
      await t.app.close();
      await proxy.stop();
      await dropProductsTable(admin, table);
    }
  });
});

describe('PglnService.resync', () => {
  it('runs the out-of-sync handlers with reason "manual", holding notifications until they completed', async () => {
    const channel = unique('manual');
    const side = unique('manual_side');
    const inside = deferred();
    const gate = deferred();
    @Injectable()
    class Cache {
      readonly events: string[] = [];
      readonly sideSeen = new Inbox<string>();
      @OnOutOfSync(channel)
      async reload(event: OutOfSyncEvent) {
        this.events.push(`reload:${event.reason}`);
        if (event.reason === 'manual') {
          inside.resolve();
          await gate.promise;
          this.events.push('reload done');
        }
      }
      @OnNotification(channel)
      apply(payload: string) {
        this.events.push(`apply:${payload}`);
      }
      @OnNotification(side)
      mark(payload: string) {
        this.sideSeen.push(payload);
      }
    }
    const t = await createTestApp({ providers: [Cache] });
    try {
      const cache = t.get(Cache);
      let resolved = false;
      const resync = t.pgln.resync(channel).then(() => (resolved = true));
      await inside.promise;
      await sendThenMark(channel, ['held'], side, 'arrived');
      await cache.sideSeen.until(1);
      expect(cache.events).toEqual(['reload:connect', 'reload:manual']);
      expect(resolved).toBe(false);
      gate.resolve();
      await resync;
      await waitFor('the held notification', () => cache.events.includes('apply:held'));
      expect(cache.events).toEqual(['reload:connect', 'reload:manual', 'reload done', 'apply:held']);
    } finally {
      await t.app.close();
    }
  });

  it('works with listen() and a channel definition, and rejects a channel nothing listens on', async () => {
    const Prices = defineChannel<{ price: number }>(unique('prices'));
    const t = await createTestApp();
    try {
      const reasons: string[] = [];
      await t.pgln.listen(Prices, { onOutOfSync: (event) => void reasons.push(event.reason) });
      await t.pgln.resync(Prices);
      await t.pgln.resync(Prices.name);
      expect(reasons).toEqual(['listen', 'manual', 'manual']);
      const nobody = unique('nobody');
      await expect(t.pgln.resync(nobody)).rejects.toThrow(
        `Cannot resync "${nobody}": nothing listens on it (no @OnNotification/@OnOutOfSync handler, no listen()).`,
      );
    } finally {
      await t.app.close();
    }
  });

  it('waits for a listener whose first sync was running, which runs again after it', async () => {
    const channel = unique('manual_side');
    const t = await createTestApp();
    try {
      await t.pgln.listen(channel, { onNotification: () => undefined });
      const gate = deferred();
      const started = deferred();
      const events: string[] = [];
      const listening = t.pgln.listen(channel, {
        onOutOfSync: async (event: OutOfSyncEvent) => {
          events.push(`start:${event.reason}`);
          if (event.reason === 'listen') {
            started.resolve();
            await gate.promise;
          }
          events.push(`end:${event.reason}`);
        },
      });
      await started.promise;
      const resync = t.pgln.resync(channel).then(() => events.push('resync() resolved'));
      gate.resolve();
      await Promise.all([listening, resync]);
      expect(events).toEqual(['start:listen', 'end:listen', 'start:manual', 'end:manual', 'resync() resolved']);
    } finally {
      await t.app.close();
    }
  });

  it('rejects when the channel is unlistened before its handlers completed', async () => {
    const channel = unique('manual_cut');
    const t = await createTestApp();
    try {
      const inside = deferred();
      const gate = deferred();
      await t.pgln.listen(channel, {
        onOutOfSync: async (event: OutOfSyncEvent) => {
          if (event.reason !== 'manual') return;
          inside.resolve();
          await gate.promise;
        },
      });
      const resync = t.pgln.resync(channel);
      await inside.promise;
      await t.pgln.unlisten(channel);
      gate.resolve();
      await expect(resync).rejects.toThrow(`resync("${channel}") did not complete: the channel was unlistened or the application is shutting down.`);
    } finally {
      await t.app.close();
    }
  });

  it('rejects when the channel is unlistened while a listener’s first sync runs, whenever that sync ends', async () => {
    const channel = unique('manual_cut_side');
    const t = await createTestApp();
    try {
      const flowing = new Inbox<string>();
      await t.pgln.listen(channel, { onNotification: flowing.push });
      const started = deferred();
      const gate = deferred();
      const listening = t.pgln.listen(channel, {
        onOutOfSync: async () => {
          started.resolve();
          await gate.promise;
        },
      });
      // Rejects once unlistened, as documented (checked below; caught now so it is never unhandled meanwhile).
      const listened = listening.then(
        () => undefined,
        (error: unknown) => error,
      );
      await started.promise;
      const resync = t.pgln.resync(channel);
      // Delivered once the queue's part of the resync is done: only that first sync still runs.
      await t.pgln.notify(channel, 'after');
      await flowing.until(1);
      await t.pgln.unlisten(channel);
      gate.resolve();
      await expect(resync).rejects.toThrow(`resync("${channel}") did not complete: the channel was unlistened or the application is shutting down.`);
      expect(String(await listened)).toMatch(`Stopped listening on "${channel}" before this listener was in sync (unlisten() was called).`);
    } finally {
      await t.app.close();
    }
  });

  it('while the connection is down, resolves once the handlers ran after the next LISTEN', async () => {
    const proxy = await TcpProxy.forUrl(databaseUrl()).start();
    const channel = unique('manual_down');
    const t = await createTestApp({}, { listener: { host: '127.0.0.1', port: proxy.port } });
    try {
      const reasons: string[] = [];
      await t.pgln.listen(channel, { onOutOfSync: (event: OutOfSyncEvent) => void reasons.push(event.reason) });
      proxy.refuse(true);
      proxy.resetAll();
      await waitFor('the connection to be lost', () => t.pgln.state === 'reconnecting');
      const resync = t.pgln.resync(channel);
      proxy.refuse(false);
      await resync;
      // The resync the reconnect queued answered the call: one run, after the new LISTEN.
      expect(reasons).toEqual(['listen', 'reconnect']);
      expect(t.pgln.state === 'syncing' || t.pgln.state === 'live').toBe(true);
    } finally {
      await t.app.close();
      await proxy.stop();
    }
  });
});

describe('a listen() whose first sync runs when the connection is lost', () => {
  it('runs it again after the new LISTEN with reason "reconnect", even when an overflow came first', async () => {
    const channel = unique('first_sync_lost');
    const t = await createTestApp({}, { maxQueuedNotifications: 2 });
    try {
      const started = deferred();
      const gate = deferred();
      const reasons: string[] = [];
      const received: string[] = [];
      const listening = t.pgln.listen(channel, {
        onOutOfSync: async (event: OutOfSyncEvent) => {
          reasons.push(event.reason);
          if (event.reason !== 'listen') return;
          started.resolve();
          await gate.promise;
        },
        onNotification: (payload: string) => void received.push(payload),
      });
      await started.promise; // its first sync has read the database, and waits
      const states = new StateLog(t.pgln);
      await terminate(admin, `${t.appName}-listener`);
      await states.reach('syncing');
      // Three notifications overflow its queue (limit 2) while that first sync still runs.
      await admin.query("SELECT pg_notify($1, '1'), pg_notify($1, '2'), pg_notify($1, '3')", [channel]);
      await waitFor('the overflow', () => t.pgln.stats().dropped > 0);
      gate.resolve();
      await listening;
      await waitFor('live', () => t.pgln.state === 'live');
      // What it read before the loss is stale: it reads once more, told the connection was lost.
      expect(reasons).toEqual(['listen', 'reconnect']);
      // And what arrived before that read began is not given to it afterwards.
      await t.pgln.notify(channel, 'after');
      await waitFor('"after"', () => received.includes('after'));
      expect(received).toEqual(['after']);
    } finally {
      await t.app.close();
    }
  });
});

describe('a channel held by an out-of-sync handler that keeps failing', () => {
  it('takes the listener out of live (syncing) and shows in stats() until it succeeds', async () => {
    const channel = unique('failing_resync');
    const t = await createTestApp({}, { reconnect: { initialDelayMs: 20, maxDelayMs: 20 } });
    try {
      const failures = new Inbox<string>();
      let broken = true;
      await t.pgln.listen(channel, {
        onOutOfSync: (event: OutOfSyncEvent) => {
          if (event.reason === 'manual' && broken) {
            failures.push('failed');
            throw new Error('the table is locked');
          }
        },
        onError: () => undefined,
      });
      const states = new StateLog(t.pgln);
      const resync = t.pgln.resync(channel);
      await failures.until(2);
      // Its notifications are held while it fails: what it keeps in sync may be stale, so not 'live'.
      expect(t.pgln.state).toBe('syncing');
      expect(t.pgln.stats().channels[channel]!.inSync).toBe(false);
      expect(t.logs.messages('log')).toContain(`live -> syncing: listen(${JSON.stringify(channel)}) on ${JSON.stringify(channel)} resyncs (manual)`);
      broken = false;
      await resync;
      await states.reach('live', 2);
      expect(t.pgln.stats().channels[channel]!.inSync).toBe(true);
    } finally {
      await t.app.close();
    }
  });
});

describe('resync() pending when the application shuts down', () => {
  it('rejects with a PglnClosedError', async () => {
    const proxy = await TcpProxy.forUrl(databaseUrl()).start();
    const channel = unique('closing_resync');
    const t = await createTestApp({}, { listener: { host: '127.0.0.1', port: proxy.port } });
    try {
      await t.pgln.listen(channel, { onOutOfSync: () => undefined });
      proxy.refuse(true);
      proxy.resetAll();
      await waitFor('the loss to be noticed', () => t.pgln.state === 'reconnecting');
      const resync = t.pgln.resync(channel); // waits for the next LISTEN, which never comes
      const closing = t.app.close();
      await expect(resync).rejects.toBeInstanceOf(PglnClosedError);
      await closing;
    } finally {
      await t.app.close();
      await proxy.stop();
    }
  });
});
