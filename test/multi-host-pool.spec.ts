import pg from 'pg';
import { createMultiHostPool, PglnOptionsError } from 'nestjs-pgln';
import { HostSelector } from '../lib/pgln.host-selector.js';
import { resolveOptions } from '../lib/pgln.options.js';
import { createTestApp } from './support/app.js';
import { backends, databaseUrl, terminate, unique } from './support/database.js';
import { LocalServer } from './support/replication.js';
import { recorder as recorderFor } from './support/recorder.js';
import { StateLog, waitFor } from './support/wait.js';

/** Runs `sql` on `server` on a connection of its own. */
async function on(server: LocalServer, sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: server.url });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

/** The server port of each of `count` queries run at once (so that the pool holds `count` connections). */
async function ports(pool: pg.Pool, count: number): Promise<number[]> {
  const results = await Promise.all(
    Array.from({ length: count }, () => pool.query<{ port: number }>('SELECT inet_server_port() AS port FROM pg_sleep(0.05)')),
  );
  return results.map(({ rows }) => rows[0]!.port);
}

/** A pool's `'error'` events, which must be listened to (a closed idle connection emits one). */
function errorsOf(pool: pg.Pool): string[] {
  const errors: string[] = [];
  pool.on('error', (error) => errors.push(error.message));
  return errors;
}

describe('createMultiHostPool: one host', () => {
  it('is a plain pg.Pool of the settings given', async () => {
    const pool = createMultiHostPool({ connectionString: databaseUrl(), max: 2 });
    try {
      expect(Object.getPrototypeOf(pool)).toBe(pg.Pool.prototype);
      expect(HostSelector.of(pool)).toBeUndefined();
      expect((pool as pg.Pool & { options: pg.PoolConfig }).options).toMatchObject({ connectionString: databaseUrl(), max: 2 });
      expect((await pool.query<{ one: number }>('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    } finally {
      await pool.end();
    }
  });

  it('refuses what it cannot honour, never echoing the string', () => {
    const problem = (config: Parameters<typeof createMultiHostPool>[0]) => {
      try {
        createMultiHostPool(config).end();
      } catch (error) {
        expect(error).toBeInstanceOf(PglnOptionsError);
        return (error as Error).message;
      }
      throw new Error('accepted');
    };
    const message = problem({ connectionString: 'postgres://app:s3cret@h1,h2/shop?target_session_attrs=any' });
    expect(message).toContain("'any' cannot go with several hosts");
    expect(message).not.toContain('s3cret');
    expect(problem({ connectionString: 'postgres://app@h1,h2/shop', port: 5433 })).toContain('host or port cannot go with hosts');
    expect(problem({ hosts: [] })).toContain('hosts must be a non-empty array');
  });
});

describe('createMultiHostPool: given to PglnModule, the options', () => {
  it("make the LISTEN connection choose with the pool's selector, which then follows it; other hosts or attributes give the listener its own", async () => {
    const pool = createMultiHostPool({ connectionString: 'postgres://app:s3cret@h1:5432,h2:5433/shop?target_session_attrs=read-write' });
    try {
      const selector = HostSelector.of(pool)!;
      expect(selector).toMatchObject({ hosts: [{ host: 'h1', port: 5432 }, { host: 'h2', port: 5433 }], attrs: 'read-write' });
      const { connection } = resolveOptions({ pool });
      expect(connection!.pool).toBe(pool);
      expect(connection!.hosts).toBe(selector);
      expect(connection!.poolHosts).toBe(selector);
      expect(connection!.target).toBe('app@h1:5432,h2:5433/shop');

      const other = resolveOptions({ pool, targetSessionAttrs: 'primary' }).connection!;
      expect(other.hosts).toMatchObject({ hosts: selector.hosts, attrs: 'primary' });
      expect(other.poolHosts).toBe(selector);
      expect(other.hosts).not.toBe(selector);
      expect(() => resolveOptions({ pool, targetSessionAttrs: 'any' })).toThrow("'any' cannot go with several hosts");
      expect(() => resolveOptions({ pool, listener: { host: 'h3' } })).toThrow('listener.host or listener.port cannot go with hosts');
    } finally {
      await pool.end();
    }
  });
});

describe('createMultiHostPool: two servers of the tests’ own', () => {
  let first: LocalServer;
  let second: LocalServer;
  let url: string;

  beforeAll(async () => {
    [first, second] = await Promise.all([LocalServer.primary(), LocalServer.primary()]);
    url = `postgres://postgres@127.0.0.1:${first.port},127.0.0.1:${second.port}/postgres`;
  }, 120_000);
  afterAll(async () => {
    await Promise.all([first?.destroy(), second?.destroy()]);
  });

  it('keeps the first host; the first stopped, moves to the second, and stays there when the first is back', async () => {
    // Idle connections close at once: each round of queries opens new ones, which go where the pool now sends.
    const pool = createMultiHostPool({ connectionString: url, max: 4, idleTimeoutMillis: 20, application_name: unique('pool') });
    errorsOf(pool);
    try {
      expect(await ports(pool, 4)).toEqual([first.port, first.port, first.port, first.port]);

      await first.stop();
      // The first queries may fail (their connection was cut): none is retried. Then every one runs on the second.
      await waitFor('every query on the second host', async () => (await ports(pool, 4)).every((port) => port === second.port), { timeoutMs: 20_000 });

      await first.start();
      await waitFor('the idle connections closed', () => pool.totalCount === 0);
      expect(await ports(pool, 4)).toEqual([second.port, second.port, second.port, second.port]);
    } finally {
      await pool.end();
    }
  }, 60_000);

  it('a statement refused as read-only closes every connection to that host, and the pool searches again', async () => {
    await Promise.all([first, second].map((server) => on(server, 'CREATE TABLE IF NOT EXISTS written (x int)')));
    const pool = createMultiHostPool({ connectionString: `${url}?target_session_attrs=read-write`, max: 3, application_name: unique('pool') });
    const errors = errorsOf(pool);
    try {
      expect(await ports(pool, 3)).toEqual([first.port, first.port, first.port]);
      // The first server turns read-only (as a demoted primary would), its connections left open.
      await on(first, 'ALTER SYSTEM SET default_transaction_read_only = on');
      await on(first, 'SELECT pg_reload_conf()');
      const refused = await waitFor('a write refused as read-only', () => pool.query('INSERT INTO written VALUES (1)').then(() => undefined, (error: unknown) => error));
      expect(refused).toMatchObject({ code: '25006' });
      // Its other connections were closed (idle: with an error on the pool), not handed out again to be refused.
      expect(errors.filter((message) => message.startsWith(`Closed a pooled connection to 127.0.0.1:${first.port}`)).length).toBeGreaterThanOrEqual(1);
      await pool.query('INSERT INTO written VALUES (2)');
      expect(await ports(pool, 3)).toEqual([second.port, second.port, second.port]);
    } finally {
      await pool.end();
      await on(first, 'ALTER SYSTEM RESET default_transaction_read_only');
      await on(first, 'SELECT pg_reload_conf()');
    }
  }, 60_000);

  it("given to PglnModule: the LISTEN connection chooses among the pool's hosts, and notify follows it, even to the second of two primaries", async () => {
    const channel = unique('hosts');
    const Recorder = recorderFor(channel);
    const poolName = unique('pool');
    const pool = createMultiHostPool({ connectionString: url, max: 4, application_name: poolName });
    errorsOf(pool);
    const t = await createTestApp({ providers: [Recorder] }, { pool });
    const listenersOn = async (server: LocalServer) => {
      const admin = new pg.Pool({ connectionString: server.url, max: 1 });
      try {
        return (await backends(admin, `${t.appName}-listener`)).length;
      } finally {
        await admin.end();
      }
    };
    const roundTrip = async (payloads: string[]) => {
      const received = t.get(Recorder).received;
      const before = received.items.length;
      await Promise.all(payloads.map((payload) => t.pgln.notify(channel, payload)));
      expect((await received.until(before + payloads.length)).slice(before).sort()).toEqual([...payloads].sort());
    };
    try {
      const states = new StateLog(t.pgln);
      expect(await listenersOn(first)).toBe(1);
      expect(t.logs.messages('log').some((line) => line.includes(`at 127.0.0.1:${first.port}`))).toBe(true);
      await roundTrip(['a1', 'a2', 'a3']);

      await first.stop();
      await states.reach('live', 2, 20_000);
      expect(await listenersOn(second)).toBe(1);
      await roundTrip(Array.from({ length: 8 }, (_, i) => `b${i}`));

      // Two primaries at once. The pool's connections fail: on its own it would search from the first
      // host; it follows the LISTEN connection, on the second, where notifications are heard.
      await first.start();
      const admin = new pg.Pool({ connectionString: second.url, max: 1 });
      expect(await terminate(admin, poolName).finally(() => admin.end())).toBeGreaterThan(0);
      await waitFor("the pool's idle connections dropped", () => pool.totalCount === 0);
      await roundTrip(Array.from({ length: 8 }, (_, i) => `c${i}`));
      expect(await ports(pool, 4)).toEqual([second.port, second.port, second.port, second.port]);
      expect(t.get(Recorder).reasons).toEqual(['connect', 'reconnect']);
    } finally {
      await t.app.close();
      await pool.end();
    }
  }, 120_000);
});
