import { type OutOfSyncEvent } from '../lib/index.js';
import { createTestApp, throughProxy, type TestApp } from './support/app.js';
import { adminPool, databaseUrl, terminate, unique } from './support/database.js';
import { TcpProxy } from './support/tcp-proxy.js';
import { Inbox, StateLog, deferred, waitFor } from './support/wait.js';

/**
 * The interleavings that left a cache older than the table for good, with no error: a read (an
 * out-of-sync handler) that began after a notification arrived saw that change already, so the
 * notification must not be applied after it. Each cache here applies what a notification says
 * without checking versions, as the README's first example does, so a notification delivered
 * after a newer read shows as a cache that stays behind the table.
 */

const admin = adminPool();
afterAll(() => admin.end());

let proxy: TcpProxy;
beforeEach(async () => {
  proxy = await TcpProxy.forUrl(databaseUrl()).start();
});
afterEach(() => proxy.stop());

/** One row, whose value each write changes and announces in the same transaction. */
async function table(): Promise<{ name: string; write: (value: string, channel: string) => Promise<void>; read: () => Promise<string> }> {
  const name = unique('stale');
  await admin.query(`CREATE TABLE ${name} (id int PRIMARY KEY, value text NOT NULL); INSERT INTO ${name} VALUES (1, '0')`);
  return {
    name,
    write: async (value, channel) => {
      await admin.query(`WITH w AS (UPDATE ${name} SET value = $1 WHERE id = 1 RETURNING value) SELECT pg_notify($2, value) FROM w`, [value, channel]);
    },
    read: async () => (await admin.query<{ value: string }>(`SELECT value FROM ${name} WHERE id = 1`)).rows[0]!.value,
  };
}

/**
 * A cache of the row: its out-of-sync handler reads it, each notification sets it (`marker`
 * changes nothing, and tells the test that everything before it was handled). `block` makes the
 * notification handler hang on that value until released.
 */
function cache(rows: { read: () => Promise<string> }) {
  const gate = deferred();
  const blocked = deferred();
  const markers = new Inbox<string>();
  const state = { value: undefined as string | undefined, reasons: [] as string[] };
  const handlers = {
    onOutOfSync: async (event: OutOfSyncEvent) => {
      state.reasons.push(event.reason);
      state.value = await rows.read();
    },
    onNotification: async (value: string) => {
      if (value.startsWith('marker')) return markers.push(value);
      state.value = value;
      if (value === 'block') {
        blocked.resolve();
        await gate.promise;
      }
    },
  };
  return { handlers, state, gate, blocked, markers };
}

/** Loses the LISTEN connection and keeps it down (new connections refused) until `up()`. */
async function down(t: TestApp): Promise<() => void> {
  proxy.refuse(true);
  proxy.resetAll();
  await waitFor('the loss to be noticed', () => t.pgln.state === 'reconnecting');
  return () => proxy.refuse(false);
}

describe('a read waiting behind a slow handler when the connection is lost', () => {
  it.each([
    ['a resync()', true],
    ['the first reconnect', false],
  ])('covers the change queued behind the handler: after %s and a second loss, the cache ends equal to the table', async (_, viaResync) => {
    const rows = await table();
    const channel = unique('stale_behind');
    const t = await createTestApp({}, throughProxy(proxy));
    const c = cache(rows);
    try {
      await t.pgln.listen(channel, c.handlers);
      const states = new StateLog(t.pgln);
      await rows.write('block', channel);
      await c.blocked.promise;
      // A read waits behind the slow handler: resync()'s, or the reconnect's.
      if (viaResync) void t.pgln.resync(channel);
      else {
        expect(await terminate(admin, `${t.appName}-listener`)).toBe(1);
        await states.reach('syncing');
      }
      await rows.write('1', channel); // arrives while the read waits behind the handler
      await waitFor('"1" to arrive', () => t.pgln.stats().received === 2);
      const up = await down(t);
      await rows.write('2', channel); // committed while nothing listens: only a read can see it
      up();
      await waitFor('the new LISTEN', () => states.states.filter((s) => s === 'syncing').length >= (viaResync ? 1 : 2));
      c.gate.resolve();
      await waitFor('live', () => t.pgln.state === 'live');
      await admin.query('SELECT pg_notify($1, $2)', [channel, 'marker']);
      await c.markers.until(1);
      expect(c.state.value).toBe(await rows.read());
      expect(c.state.value).toBe('2');
    } finally {
      c.gate.resolve();
      await t.app.close();
      await admin.query(`DROP TABLE ${rows.name}`);
    }
  });
});

describe('a listen() whose first out-of-sync handler is still running', () => {
  it('is not given, after the read it makes once the connection is back, what arrived before it lost the connection', async () => {
    const rows = await table();
    const channel = unique('stale_first');
    const t = await createTestApp({}, throughProxy(proxy));
    try {
      const hold = deferred();
      const reading = deferred();
      const markers = new Inbox<string>();
      const state = { value: undefined as string | undefined, reasons: [] as string[] };
      const listening = t.pgln.listen(channel, {
        onOutOfSync: async (event: OutOfSyncEvent) => {
          state.reasons.push(event.reason);
          state.value = await rows.read();
          if (event.reason !== 'listen') return;
          reading.resolve();
          await hold.promise; // has read '0', and waits
        },
        onNotification: (value: string) => {
          if (value.startsWith('marker')) markers.push(value);
          else state.value = value;
        },
      });
      await reading.promise;
      await rows.write('1', channel); // arrives while its first sync runs: held for it
      await waitFor('"1" to be held', () => t.pgln.stats().queued === 1);
      const up = await down(t);
      await rows.write('2', channel);
      up();
      await waitFor('live again', () => t.pgln.state === 'live');
      hold.resolve();
      await listening;
      await admin.query('SELECT pg_notify($1, $2)', [channel, 'marker']);
      await markers.until(1);
      expect(state.reasons).toEqual(['listen', 'reconnect']);
      expect(state.value).toBe('2');
    } finally {
      await t.app.close();
      await admin.query(`DROP TABLE ${rows.name}`);
    }
  });

  it('is not given, after the read an overflow makes it do again, what it held before the overflow', async () => {
    const rows = await table();
    const channel = unique('stale_overflow');
    const t = await createTestApp({}, { maxQueuedNotifications: 2 });
    // Another subscriber of the channel, whose handler blocks on 'block': the channel's queue grows behind it.
    const other = cache(rows);
    try {
      const hold = deferred();
      const reading = deferred();
      const markers = new Inbox<string>();
      const state = { value: undefined as string | undefined, reasons: [] as string[] };
      await t.pgln.listen(channel, { onNotification: other.handlers.onNotification });
      const listening = t.pgln.listen(channel, {
        onOutOfSync: async (event: OutOfSyncEvent) => {
          state.reasons.push(event.reason);
          state.value = await rows.read();
          if (event.reason !== 'listen') return;
          reading.resolve();
          await hold.promise;
        },
        onNotification: (value: string) => {
          if (value.startsWith('marker')) markers.push(value);
          else state.value = value;
        },
      });
      await reading.promise;
      await rows.write('1', channel);
      await rows.write('block', channel);
      await other.blocked.promise;
      for (const value of ['2', '3', '4']) await rows.write(value, channel); // more than 2 wait: an overflow
      await waitFor('the overflow', () => t.pgln.stats().dropped > 0);
      hold.resolve();
      await listening;
      other.gate.resolve();
      await admin.query('SELECT pg_notify($1, $2)', [channel, 'marker']);
      await markers.until(1);
      expect(state.reasons).toEqual(['listen', 'overflow']);
      expect(state.value).toBe('4');
    } finally {
      other.gate.resolve();
      await t.app.close();
      await admin.query(`DROP TABLE ${rows.name}`);
    }
  });
});
