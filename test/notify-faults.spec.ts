import pg from 'pg';
import { PglnTimeoutError, type PglnModuleOptions } from '../lib/index.js';
import { createTestApp, proxyForEachTest, type TestApp } from './support/app.js';
import { adminPool, databaseUrl, unique } from './support/database.js';
import { TcpProxy } from './support/tcp-proxy.js';
import { Inbox, waitFor } from './support/wait.js';

/**
 * What happens to `notify` when the pool's connections fail: a connection reset while a
 * notification is in flight, a pool with no connection to give, a server that answers with an
 * error. The LISTEN connection goes direct; only the pool's connections cross the proxy.
 */

const admin = adminPool();
afterAll(() => admin.end());

let proxy: TcpProxy;
proxyForEachTest((started) => (proxy = started));

/** Listener settings that bypass the proxy (host and port of the test server). */
function directListener(): PglnModuleOptions['listener'] {
  const url = new URL(databaseUrl());
  return { host: url.hostname, port: Number(url.port || 5432) };
}

type Send = (t: TestApp, channel: string, payload: string) => Promise<void>;
const SENDS: [string, Send][] = [
  ['notify', (t, channel, payload) => t.pgln.notify(channel, payload)],
  ['notifyMany', (t, channel, payload) => t.pgln.notifyMany([{ channel, payload }])],
];

describe('a pooled connection reset while a notification is in flight', () => {
  const POOLS: [string, () => { options: Partial<PglnModuleOptions>; end?: () => Promise<void> }][] = [
    ['the module’s pool', () => ({ options: { connectionString: proxy.url(databaseUrl()) } })],
    [
      // Deliberately without an 'error' listener of its own: only the checked-out connection is ours to guard.
      'a pool of the application’s',
      () => {
        const pool = new pg.Pool({ connectionString: proxy.url(databaseUrl()), max: 2 });
        return { options: { pool }, end: () => pool.end() };
      },
    ],
  ];

  describe.each(POOLS)('with %s', (_, makePool) => {
    it.each(SENDS)('%s rejects with the driver’s error, the process lives, and the next one is delivered', async (__, send) => {
      const { options, end } = makePool();
      const channel = unique('reset_in_flight');
      const t = await createTestApp({}, { ...options, listener: directListener() });
      try {
        const received = new Inbox<string>();
        await t.pgln.listen(channel, { onNotification: received.push });
        proxy.latency(300);
        const inFlight = send(t, channel, 'lost');
        await waitFor('the notification to be on the wire', () => proxy.queries.some((sql) => sql.includes('pg_notify')));
        proxy.resetAll();
        await expect(inFlight).rejects.toThrow(/Connection terminated|ECONNRESET|socket/i);
        proxy.latency(0);
        await send(t, channel, 'next');
        expect(await received.until(1)).toEqual(['next']);
      } finally {
        await t.app.close();
        await end?.();
      }
    });
  });
});

describe('notifyTimeoutMs bounds the whole call', () => {
  it.each(SENDS)('%s fails in time when the pool has no connection to give, adds no waiters past its size, and hands a late one back', async (_, send) => {
    const channel = unique('pool_exhausted');
    const pool = new pg.Pool({ connectionString: databaseUrl(), max: 1 });
    const t = await createTestApp({}, { pool, notifyTimeoutMs: 300 });
    try {
      const received = new Inbox<string>();
      await t.pgln.listen(channel, { onNotification: received.push });
      const busy = await pool.connect();
      const failure = await send(t, channel, 'waits').then(() => undefined, (error: Error) => error);
      expect(failure).toBeInstanceOf(PglnTimeoutError);
      expect(failure?.message).toMatch(
        /got no connection from the pool within notifyTimeoutMs \(300 ms\), so nothing was sent \(pool: 1 of max 1 connections open, 0 idle, 1 callers waiting\)/,
      );
      // The pool owes as many connections as it may open: no more waiters are added to it.
      await expect(send(t, channel, 'waits too')).rejects.toThrow(
        /was not sent: the pool has yet to hand over the 1 connections asked for by notifications that timed out/,
      );
      expect(pool.waitingCount).toBe(1);
      busy.release();
      // The connection the pool handed over too late went straight back: nothing leaked, nothing waits.
      await waitFor('the pool to be idle again', () => pool.idleCount === 1 && pool.waitingCount === 0);
      await send(t, channel, 'sent');
      expect(await received.until(1)).toEqual(['sent']);
    } finally {
      await t.app.close();
      await pool.end();
    }
  });
});

describe('a server error does not cost the connection', () => {
  const schema = unique('notify_queue_full');
  beforeAll(() =>
    // Stands in for a full notification queue (SQLSTATE 54000), which takes gigabytes to reach.
    admin.query(`
      CREATE SCHEMA ${schema};
      CREATE FUNCTION ${schema}.pg_notify(channel text, payload text) RETURNS void LANGUAGE plpgsql AS $$
      BEGIN
        IF payload = 'full' THEN
          RAISE EXCEPTION 'too many notifications in the NOTIFY queue' USING ERRCODE = '54000';
        END IF;
        PERFORM pg_catalog.pg_notify(channel, payload);
      END $$;`),
  );
  afterAll(() => admin.query(`DROP SCHEMA ${schema} CASCADE`));

  it.each(SENDS)('%s rejects with it and keeps the connection, which answered', async (_, send) => {
    const channel = unique('queue_full');
    // Sessions of this pool find the stand-in before pg_catalog's pg_notify.
    const pool = new pg.Pool({ connectionString: databaseUrl(), max: 1, options: `-c search_path=${schema},pg_catalog` });
    const t = await createTestApp({}, { pool });
    try {
      const received = new Inbox<string>();
      await t.pgln.listen(channel, { onNotification: received.push });
      const pid = async () => (await pool.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
      const before = await pid();
      await expect(send(t, channel, 'full')).rejects.toMatchObject({ code: '54000' });
      expect(await pid()).toBe(before);
      await send(t, channel, 'fine');
      expect(await received.until(1)).toEqual(['fine']);
      expect(await pid()).toBe(before);
    } finally {
      await t.app.close();
      await pool.end();
    }
  });
});
