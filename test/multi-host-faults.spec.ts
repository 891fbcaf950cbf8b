import pg from 'pg';
import { createMultiHostPool } from 'nestjs-pgln';
import { createTestApp } from './support/app.js';
import { adminPool, databaseUrl, unique } from './support/database.js';
import { recorder as recorderFor } from './support/recorder.js';
import { TcpProxy } from './support/tcp-proxy.js';
import { StateLog, waitFor } from './support/wait.js';

/**
 * Several hosts under faults found by an adversarial review: a host that goes silent must not keep
 * the pool's places, a pool must not stay pinned to the host of a module that closed, a connection
 * that never connected must be let go, and no host qualifying must not become a storm of logins.
 * Two proxies to the test server stand for two hosts.
 */

const admin = adminPool();
afterAll(() => admin.end());

/** Two "hosts" (proxies to the test server) and a multi-host URL listing them in order, as the test server's user or `login`. */
async function twoHosts(login?: { user: string; password: string }, query = '') {
  const a = await TcpProxy.forUrl(databaseUrl()).start();
  const b = await TcpProxy.forUrl(databaseUrl()).start();
  const server = new URL(databaseUrl());
  const user = login ? `${login.user}:${login.password}` : server.password ? `${server.username}:${server.password}` : server.username;
  const url = `postgres://${user}@127.0.0.1:${a.port},127.0.0.1:${b.port}${server.pathname}${query}`;
  return { a, b, url, stop: () => Promise.all([a.stop(), b.stop()]) };
}

describe('createMultiHostPool under faults', () => {
  it('drops its connections still connecting to a host that went silent once the LISTEN connection moved on', async () => {
    const hosts = await twoHosts();
    const channel = unique('silent');
    const Recorder = recorderFor(channel);
    // No connectionTimeoutMillis: the default bounds the search, and now the pool's own connecting too.
    const pool = createMultiHostPool({ connectionString: hosts.url, max: 3, idleTimeoutMillis: 50, application_name: unique('pool') });
    pool.on('error', () => undefined);
    const t = await createTestApp({ providers: [Recorder] }, { pool, notifyTimeoutMs: 1_000, healthCheck: { intervalMs: 200, timeoutMs: 500 } });
    try {
      const states = new StateLog(t.pgln);
      await waitFor('idle pooled connections closed', () => pool.totalCount === 0);
      // The first host stops answering: notifications sent before the listener notices open connections there that hang.
      hosts.a.blackhole(true);
      const during = await Promise.allSettled([1, 2, 3].map((i) => t.pgln.notify(channel, `during${i}`)));
      expect(during.map((result) => result.status)).toEqual(['rejected', 'rejected', 'rejected']);
      await states.reach('live', 2, 20_000);
      // The LISTEN connection is on the second host: the pool holds no place for the first any more.
      await waitFor('no connection to the silent host', () => pool.totalCount === 0);
      await t.pgln.notify(channel, 'after');
      expect(await t.get(Recorder).received.until(1)).toEqual(['after']);
    } finally {
      await t.app.close();
      await pool.end();
      await hosts.stop();
    }
  });

  it('chooses its hosts on its own again once the module it was given to has closed', async () => {
    const hosts = await twoHosts();
    const pool = createMultiHostPool({ connectionString: hosts.url, max: 2, idleTimeoutMillis: 50, connectionTimeoutMillis: 1_000, application_name: unique('pool') });
    pool.on('error', () => undefined);
    try {
      const t = await createTestApp({}, { pool });
      await t.pgln.notify(unique('x'), 'hello');
      await t.app.close();
      await waitFor('idle pooled connections closed', () => pool.totalCount === 0);
      // The host the module listened on goes; the pool is the application's, and goes on.
      hosts.a.refuse(true);
      hosts.a.resetAll();
      const { rows } = await pool.query<{ one: number }>('SELECT 1 AS one');
      expect(rows).toEqual([{ one: 1 }]);
    } finally {
      await pool.end();
      await hosts.stop();
    }
  });

  it('tells a connection that never connected (no host to connect to) ended, as pg tells one that failed', async () => {
    const hosts = await twoHosts();
    hosts.a.refuse(true);
    hosts.b.refuse(true);
    const made: pg.Client[] = [];
    const ended = new Set<pg.Client>();
    class Recorded extends pg.Client {
      constructor(config?: pg.ClientConfig) {
        super(config);
        made.push(this);
        this.once('end', () => ended.add(this));
      }
    }
    const pool = createMultiHostPool({ connectionString: hosts.url, max: 2, connectionTimeoutMillis: 1_000, Client: Recorded } as never);
    pool.on('error', () => undefined);
    try {
      for (let i = 0; i < 5; i++) await expect(pool.query('SELECT 1')).rejects.toThrow(/refused|ECONNREFUSED|no host/i);
      expect(made.length).toBeGreaterThan(0);
      expect(made.filter((client) => !ended.has(client))).toEqual([]);
    } finally {
      await pool.end();
      await hosts.stop();
    }
  });
});

describe("the module's pool while no host qualifies", () => {
  const role = unique('readonly');
  beforeAll(() => admin.query(`CREATE ROLE ${role} LOGIN PASSWORD 'secret'`));
  afterAll(async () => {
    await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1', [role]);
    await admin.query(`DROP ROLE IF EXISTS ${role}`);
  });

  it('fails notifications at once after a search found none, instead of searching for each (a storm of logins)', async () => {
    const hosts = await twoHosts({ user: role, password: 'secret' }, '?target_session_attrs=read-write');
    const t = await createTestApp({}, { connectionString: hosts.url, reconnect: { initialDelayMs: 1_000, maxDelayMs: 10_000 }, notifyTimeoutMs: 2_000 });
    try {
      const states = new StateLog(t.pgln);
      await t.pgln.notify(unique('x'), 'hello');
      // Every host turns read-only for this role (as every node is a standby during a failover), and its sessions end.
      await admin.query(`ALTER ROLE ${role} SET default_transaction_read_only = on`);
      await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1', [role]);
      await states.reach('reconnecting');
      const before = hosts.a.accepted + hosts.b.accepted;
      const notifies = 50;
      let failed = 0;
      for (let i = 0; i < notifies; i++) await t.pgln.notify(unique('x'), 'during').catch(() => failed++);
      expect(failed).toBe(notifies);
      // A search tries both hosts; one per notification would be 100 logins. A few searches (and the listener's attempts) at most.
      expect(hosts.a.accepted + hosts.b.accepted - before).toBeLessThan(notifies / 2);
    } finally {
      await t.app.close();
      await hosts.stop();
    }
  });
});
