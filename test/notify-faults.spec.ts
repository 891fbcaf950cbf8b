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

describe('an application pool’s connection handed from one notification straight to the next', () => {
  it('is guarded for the next one: its reset rejects that one, and the process lives', async () => {
    const channel = unique('handed_on');
    // Without an 'error' listener of its own, and one connection: the second notify waits for the first's.
    const pool = new pg.Pool({ connectionString: proxy.url(databaseUrl()), max: 1 });
    const t = await createTestApp({}, { pool, listener: directListener() });
    try {
      const received = new Inbox<string>();
      await t.pgln.listen(channel, { onNotification: received.push });
      await t.pgln.notify(channel, 'warm');
      expect(await received.until(1)).toEqual(['warm']);
      proxy.latency(300);
      const first = t.pgln.notify(channel, 'first');
      const second = t.pgln.notify(channel, 'second');
      // pg-pool hands the connection to the second within the first's release.
      await first;
      await waitFor('the second on the wire', () => proxy.queries.filter((sql) => sql.includes('pg_notify')).length >= 3);
      proxy.resetAll();
      await expect(second).rejects.toThrow(/Connection terminated|ECONNRESET|socket/i);
      proxy.latency(0);
      await t.pgln.notify(channel, 'next');
      expect(await received.until(3)).toEqual(['warm', 'first', 'next']);
    } finally {
      await t.app.close();
      await pool.end();
    }
  });
});

/**
 * An app on a one-connection pool whose connection the test holds (`busy`) while `body` runs;
 * afterwards a notification goes through, and the app and pool are closed.
 */
async function onBusyPool(
  prefix: string,
  notifyTimeoutMs: number,
  send: Send,
  body: (held: { t: TestApp; pool: pg.Pool; channel: string; busy: pg.PoolClient }) => Promise<void>,
): Promise<void> {
  const channel = unique(prefix);
  const pool = new pg.Pool({ connectionString: databaseUrl(), max: 1 });
  const t = await createTestApp({}, { pool, notifyTimeoutMs });
  try {
    const received = new Inbox<string>();
    await t.pgln.listen(channel, { onNotification: received.push });
    await body({ t, pool, channel, busy: await pool.connect() });
    await send(t, channel, 'sent');
    expect(await received.until(1)).toEqual(['sent']);
  } finally {
    await t.app.close();
    await pool.end();
  }
}

describe('notifyTimeoutMs bounds the whole call', () => {
  it.each(SENDS)('%s fails in time when the pool has no connection to give, adds no waiters past its size, and hands a late one back', async (_, send) => {
    await onBusyPool('pool_exhausted', 300, send, async ({ t, pool, channel, busy }) => {
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
    });
  });
});

describe('an application pool ended while it still owes connections', () => {
  it.each(SENDS)("%s fails with pg-pool's own error, which says the pool was ended", async (_, send) => {
    const channel = unique('ended');
    const pool = new pg.Pool({ connectionString: databaseUrl(), max: 1 });
    const t = await createTestApp({}, { pool, notifyTimeoutMs: 300 });
    try {
      const busy = await pool.connect();
      await expect(send(t, channel, 'waits')).rejects.toThrow(PglnTimeoutError);
      // The pool owes a connection, and the application ends it.
      const ended = pool.end();
      await expect(send(t, channel, 'after the end')).rejects.toThrow(/Cannot use a pool after calling end on the pool/);
      busy.release();
      await ended;
    } finally {
      await t.app.close();
    }
  });
});

describe('a connection handed over when too little of notifyTimeoutMs is left', () => {
  it.each(SENDS)('%s gives it back and fails at once, saying so; nothing is owed', async (_, send) => {
    // The query's floor is 1 s: a connection handed over after 1 s of 2 s is given back.
    await onBusyPool('pool_late', 2_000, send, async ({ t, pool, channel, busy }) => {
      const started = performance.now();
      const failure = send(t, channel, 'late').then(() => undefined, (error: Error) => error);
      await new Promise((resolve) => setTimeout(resolve, 1_300));
      const released = performance.now();
      busy.release();
      const error = await failure;
      // At the handover, long before notifyTimeoutMs runs out.
      expect(performance.now() - released).toBeLessThan(300);
      expect(performance.now() - started).toBeLessThan(1_900);
      expect(error).toBeInstanceOf(PglnTimeoutError);
      expect(error?.message).toMatch(/got no connection from the pool within notifyTimeoutMs \(2000 ms\), so nothing was sent/);
      expect({ idle: pool.idleCount, waiting: pool.waitingCount }).toEqual({ idle: 1, waiting: 0 });
    });
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

describe('a pooled connection the server terminates while a notification is in flight (FATAL 57P01)', () => {
  const schema = unique('notify_slow');
  beforeAll(() =>
    // pg_notify that takes its time when asked to, so that the test can terminate its backend meanwhile.
    admin.query(`
      CREATE SCHEMA ${schema};
      CREATE FUNCTION ${schema}.pg_notify(channel text, payload text) RETURNS void LANGUAGE plpgsql AS $$
      BEGIN
        IF payload = 'slow' THEN PERFORM pg_sleep(30); END IF;
        PERFORM pg_catalog.pg_notify(channel, payload);
      END $$;`),
  );
  afterAll(() => admin.query(`DROP SCHEMA ${schema} CASCADE`));

  /** Terminates the backend of `applicationName` that runs the slow pg_notify, once it does. */
  async function terminateSlowNotify(applicationName: string): Promise<void> {
    const pid = await waitFor('the slow notify to run', async () => {
      const { rows } = await admin.query<{ pid: number }>(
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND state = 'active' AND query LIKE '%pg_notify%'",
        [applicationName],
      );
      return rows[0]?.pid;
    });
    await admin.query('SELECT pg_terminate_backend($1)', [pid]);
  }

  const POOLS: [string, (applicationName: string) => { options: Partial<PglnModuleOptions>; pool?: pg.Pool }][] = [
    [
      'the module’s pool',
      (applicationName) => ({
        options: { pool: { connectionString: databaseUrl(), max: 1, application_name: applicationName, options: `-c search_path=${schema},pg_catalog` } },
      }),
    ],
    [
      // Without an 'error' listener, as the README allows: a dead idle connection would crash the process.
      'a pool of the application’s',
      (applicationName) => {
        const pool = new pg.Pool({ connectionString: databaseUrl(), max: 1, application_name: applicationName, options: `-c search_path=${schema},pg_catalog` });
        return { options: { pool }, pool };
      },
    ],
  ];

  describe.each(POOLS)('with %s', (_, makePool) => {
    it.each(SENDS)('%s rejects with it, the connection is destroyed rather than reused, and the notify waiting for it is sent', async (__, send) => {
      const applicationName = unique('fatal');
      const { options, pool } = makePool(applicationName);
      const channel = unique('fatal');
      const t = await createTestApp({}, { ...options, applicationName });
      try {
        const received = new Inbox<string>();
        await t.pgln.listen(channel, { onNotification: received.push });
        const terminated = send(t, channel, 'slow');
        const waiting = send(t, channel, 'next'); // the pool's one connection is busy: it waits for it
        await terminateSlowNotify(applicationName);
        await expect(terminated).rejects.toMatchObject({ code: '57P01' });
        if (pool) {
          // Not handed back to the pool, where its socket's close would be an 'error' nobody listens to.
          expect(pool.totalCount).toBeLessThanOrEqual(1);
          expect(pool.idleCount).toBe(0);
        }
        await waiting;
        expect(await received.until(1)).toEqual(['next']);
      } finally {
        await t.app.close();
        await pool?.end();
      }
    });
  });

  it('an application pool with nothing waiting loses the connection at once, and the process lives on', async () => {
    const applicationName = unique('fatal_idle');
    const pool = new pg.Pool({ connectionString: databaseUrl(), max: 1, application_name: applicationName, options: `-c search_path=${schema},pg_catalog` });
    const channel = unique('fatal_idle');
    const t = await createTestApp({}, { pool, applicationName });
    try {
      const received = new Inbox<string>();
      await t.pgln.listen(channel, { onNotification: received.push });
      const terminated = t.pgln.notify(channel, 'slow');
      await terminateSlowNotify(applicationName);
      await expect(terminated).rejects.toMatchObject({ code: '57P01', severity: 'FATAL' });
      expect({ total: pool.totalCount, idle: pool.idleCount }).toEqual({ total: 0, idle: 0 });
      await t.pgln.notify(channel, 'after');
      expect(await received.until(1)).toEqual(['after']);
    } finally {
      await t.app.close();
      await pool.end();
    }
  });
});

describe("the pool's own connection timeout", () => {
  it.each(SENDS)('%s rejects with a PglnTimeoutError naming it when it fires before notifyTimeoutMs', async (_, send) => {
    const t = await createTestApp({}, {
      pool: { connectionString: proxy.url(databaseUrl()), connectionTimeoutMillis: 100 },
      listener: directListener(),
      notifyTimeoutMs: 5_000,
    });
    try {
      proxy.blackhole(true);
      const failure = await send(t, unique('pool_timer'), 'x').then(() => undefined, (error: Error) => error);
      expect(failure).toBeInstanceOf(PglnTimeoutError);
      expect(failure?.message).toMatch(/got no connection from the pool within its connectionTimeoutMillis \(100 ms\), so nothing was sent/);
    } finally {
      proxy.blackhole(false);
      await t.app.close();
    }
  });
});
