import { Injectable } from '@nestjs/common';
import pg from 'pg';
import { OnNotification, OnOutOfSync, PglnConnectionError, type OutOfSyncEvent } from '../lib/index.js';
import { buildTestApp, createTestApp, initFailure } from './support/app.js';
import { adminPool, databaseUrl, unique } from './support/database.js';
import { PgBouncer, pgbouncerMissing } from './support/pgbouncer.js';
import { recorder } from './support/recorder.js';
import { TcpProxy } from './support/tcp-proxy.js';
import { StateLog, waitFor } from './support/wait.js';

/**
 * PgBouncer (the Debian package; .ci/run installs it), started by the tests in front of the test
 * server, in transaction and in session mode. No mock: PgBouncer's own behaviour is the point.
 */

const missing = pgbouncerMissing();
if (missing) process.stdout.write(`\ntest/pgbouncer.spec.ts is skipped: ${missing}\n`);
const withPgBouncer = missing ? describe.skip : describe;

const admin = adminPool();
afterAll(() => admin.end());

/** The test server's host and port, for a listener that bypasses PgBouncer. */
function direct() {
  const url = new URL(databaseUrl());
  return { host: url.hostname, port: Number(url.port || 5432) };
}


withPgBouncer('a listener pointed at PgBouncer', () => {
  it('in transaction mode fails startup at once, saying what is wrong and how to fix it', async () => {
    const bouncer = await PgBouncer.start(databaseUrl(), 'transaction');
    try {
      const built = await buildTestApp(
        { providers: [recorder(unique('pooled'))] },
        { listener: { host: '127.0.0.1', port: bouncer.port }, healthCheck: { timeoutMs: 1000 } },
      );
      const failure = await initFailure(built);
      expect(failure).toBeInstanceOf(PglnConnectionError);
      expect((failure as Error).message).toMatch(
        new RegExp(
          `^The LISTEN connection to postgres@127\\.0\\.0\\.1:${bouncer.port}/\\S+ does not hear notifications sent from other connections ` +
            '.*pool_mode = transaction.*session-mode pool: listener: \\{ connectionString',
        ),
      );
      // Never a reconnect loop.
      expect(built.logs.messages('warn').filter((line) => line.startsWith('Cannot connect'))).toEqual([]);
    } finally {
      await bouncer.stop();
    }
  });

  it('in session mode works', async () => {
    const bouncer = await PgBouncer.start(databaseUrl(), 'session');
    const channel = unique('session_mode');
    const Recorder = recorder(channel);
    try {
      const t = await createTestApp({ providers: [Recorder] }, { listener: { host: '127.0.0.1', port: bouncer.port } });
      try {
        await t.pgln.notify(channel, 'through session mode');
        expect(await t.get(Recorder).received.until(1)).toEqual(['through session mode']);
        expect(t.get(Recorder).reasons).toEqual(['connect']);
      } finally {
        await t.app.close();
      }
    } finally {
      await bouncer.stop();
    }
  });
});

/** Changes random rows and announces each change in the same transaction, through a pool, until stopped. */
class Writer {
  writes = 0;
  failures = 0;
  private running = true;
  private readonly done: Promise<void>;

  constructor(
    private readonly pool: pg.Pool,
    private readonly table: string,
    private readonly send: (client: pg.PoolClient, change: { id: number; version: number }) => Promise<void>,
  ) {
    this.done = this.loop();
  }

  /** Resolves once `count` more writes have committed. */
  async progress(count: number): Promise<void> {
    const target = this.writes + count;
    await waitFor(`${count} more writes`, () => this.writes >= target, { timeoutMs: 20_000 });
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.done;
  }

  private async loop(): Promise<void> {
    while (this.running) {
      const client = await this.pool.connect().catch(() => undefined);
      if (!client) {
        this.failures += 1;
        continue;
      }
      let broken: Error | undefined;
      const onError = (error: Error) => (broken = error);
      client.on('error', onError);
      try {
        await client.query('BEGIN');
        const id = 1 + Math.floor(Math.random() * 20);
        const { rows } = await client.query<{ version: number }>(`UPDATE ${this.table} SET version = version + 1 WHERE id = $1 RETURNING version`, [id]);
        await this.send(client, { id, version: rows[0]!.version });
        await client.query('COMMIT');
        this.writes += 1;
      } catch (error) {
        // PgBouncer dropped the connection mid-transaction: nothing was committed, or (if COMMIT's
        // answer was lost) the change and its notification were, together.
        broken ??= error as Error;
        this.failures += 1;
      } finally {
        client.release(broken);
        client.removeListener('error', onError);
      }
    }
  }
}

withPgBouncer('a listener behind a session-mode PgBouncer that loses its client connection', () => {
  it('kills neither itself nor anyone else: PgBouncer hands the same backend on, its advisory lock released', async () => {
    const bouncer = await PgBouncer.start(databaseUrl(), 'session');
    const proxy = await new TcpProxy('127.0.0.1', bouncer.port).start();
    const channel = unique('session_reuse');
    const Recorder = recorder(channel);
    try {
      const t = await createTestApp({ providers: [Recorder] }, { listener: { host: '127.0.0.1', port: proxy.port } });
      try {
        const states = new StateLog(t.pgln);
        // The listener's server connection (the startup probe's is there too, idle).
        const listener = async () =>
          (await bouncer.admin<{ remote_pid: number; application_name: string; state: string }>('SHOW SERVERS')).find(
            (server) => server.application_name === `${t.appName}-listener` && server.state === 'active',
          )?.remote_pid;
        const before = await listener();
        expect(before).toBeDefined();
        // The client side breaks; PgBouncer keeps the server connection, resets it and gives it to the next client.
        proxy.resetAll();
        await states.reach('live', 2);
        expect(await listener()).toBe(before);
        await t.pgln.notify(channel, 'after');
        expect(await t.get(Recorder).received.until(1)).toEqual(['after']);
        expect(t.get(Recorder).reasons).toEqual(['connect', 'reconnect']);
        const lines = t.logs.messages('warn');
        expect(lines.filter((line) => /Terminated the backend|Cannot terminate/.test(line))).toEqual([]);
      } finally {
        await t.app.close();
      }
    } finally {
      await proxy.stop();
      await bouncer.stop();
    }
  });
});

withPgBouncer('a session-mode PgBouncer that does not reset sessions (server_reset_query empty)', () => {
  it.each([
    ['that names itself', 'another-app'],
    ['that sends no application_name', undefined],
  ])('hands our lost listener’s backend, our advisory lock still held, to another client %s: it is not terminated', async (_, applicationName) => {
    const bouncer = await PgBouncer.start(databaseUrl(), 'session', ['server_reset_query =']);
    const proxy = await new TcpProxy('127.0.0.1', bouncer.port).start();
    const other = new pg.Client({ connectionString: bouncer.url(), application_name: applicationName });
    other.on('error', () => undefined);
    try {
      const t = await createTestApp(
        { providers: [recorder(unique('no_reset'))] },
        { listener: { host: '127.0.0.1', port: proxy.port }, healthCheck: { intervalMs: 100, timeoutMs: 300 } },
      );
      try {
        type Server = { remote_pid: number; state: string; application_name: string };
        const servers = () => bouncer.admin<Server>('SHOW SERVERS');
        const listener = (await servers()).find((server) => server.application_name === `${t.appName}-listener`)!;
        // The listener's side goes dead; PgBouncer learns of it only once the flow is torn down.
        proxy.blackhole(true);
        await waitFor('the lost session to be noticed', () => t.pgln.state === 'reconnecting');
        await waitFor('the proxy to see the listener’s side closed', () => proxy.orphaned === 1);
        proxy.releaseOrphans();
        await waitFor('PgBouncer to take that server connection back', async () =>
          (await servers()).some((server) => server.remote_pid === listener.remote_pid && server.state === 'idle'),
        );
        await other.connect();
        const { rows } = await other.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
        expect(rows[0]!.pid).toBe(listener.remote_pid); // the same backend, our lock still on it
        proxy.blackhole(false);
        await waitFor('the listener to be live again', () => t.pgln.state === 'live');
        // Once a health check went out after the termination query, that query has been answered.
        await waitFor('a health check after the termination query', () => {
          const terminate = proxy.queries.findIndex((sql) => sql.includes('pg_terminate_backend'));
          return terminate >= 0 && proxy.queries.slice(terminate).some((sql) => sql.includes('pg_listening_channels'));
        });
        await expect(other.query('SELECT 1')).resolves.toBeDefined();
        expect(t.logs.messages('warn').filter((line) => line.startsWith('Terminated the backend'))).toEqual([]);
      } finally {
        await t.app.close();
      }
    } finally {
      await other.end().catch(() => undefined);
      await proxy.stop();
      await bouncer.stop();
    }
  });
});

withPgBouncer('notify through a transaction-mode PgBouncer, listen direct', () => {
  it('keeps a copy equal to the table through RECONNECT, KILL, PAUSE/RESUME and a PgBouncer crash', async () => {
    const bouncer = await PgBouncer.start(databaseUrl(), 'transaction');
    const table = unique('bounced');
    const channel = unique('bounced');
    await admin.query(`CREATE TABLE ${table} (id int PRIMARY KEY, version int NOT NULL DEFAULT 1); INSERT INTO ${table} (id) SELECT generate_series(1, 20)`);

    @Injectable()
    class Copy {
      readonly rows = new Map<number, number>();
      readonly reasons: string[] = [];
      wentBack = 0;
      @OnOutOfSync(channel)
      async reload(event: OutOfSyncEvent) {
        this.reasons.push(event.reason);
        const { rows } = await admin.query<{ id: number; version: number }>(`SELECT id, version FROM ${table}`);
        for (const row of rows) this.rows.set(row.id, row.version);
      }
      @OnNotification(channel, { json: true })
      apply(change: { id: number; version: number }) {
        const known = this.rows.get(change.id) ?? 0;
        if (change.version < known) this.wentBack += 1;
        else this.rows.set(change.id, change.version);
      }
    }

    // The module's pool goes through PgBouncer; the LISTEN connection goes direct.
    const t = await createTestApp({ providers: [Copy] }, { connectionString: bouncer.url(), listener: direct() });
    const writes = new pg.Pool({ connectionString: bouncer.url(), max: 4 });
    writes.on('error', () => undefined); // idle connections PgBouncer drops
    const writer = new Writer(writes, table, (client, change) => t.pgln.notify(channel, change, { executor: client }));
    try {
      await writer.progress(50);
      await bouncer.admin('RECONNECT');
      await writer.progress(50);
      await bouncer.admin(`KILL ${bouncer.database}`);
      // KILL drops every connection to the database and holds new ones until RESUME.
      await bouncer.admin(`RESUME ${bouncer.database}`);
      await writer.progress(50);
      await bouncer.admin('PAUSE');
      await waitFor('a write to wait for RESUME', async () =>
        (await bouncer.admin<{ database: string; cl_waiting: string }>('SHOW POOLS')).some(
          (pool) => pool.database === bouncer.database && Number(pool.cl_waiting) > 0,
        ),
      );
      await bouncer.admin('RESUME');
      await writer.progress(50);
      await bouncer.crashAndRestart();
      await writer.progress(50);
      // The module's own pool, through PgBouncer, still sends.
      await t.pgln.notify(channel, { id: 1, version: 0 });
    } finally {
      await writer.stop();
    }
    try {
      const copy = t.get(Copy);
      const table_ = async () => new Map((await admin.query<{ id: number; version: number }>(`SELECT id, version FROM ${table}`)).rows.map((r) => [r.id, r.version]));
      const expected = await table_();
      await waitFor('the copy to equal the table', () => JSON.stringify([...copy.rows].sort()) === JSON.stringify([...expected].sort()));
      // The listener never lost its connection: no resync was needed, and no notification went missing.
      expect(copy.reasons).toEqual(['connect']);
      expect(copy.wentBack).toBe(1); // only the deliberate { version: 0 } above
      expect(writer.failures).toBeGreaterThan(0); // the faults did hit the writes
    } finally {
      await writes.end();
      await t.app.close();
      await bouncer.stop();
      await admin.query(`DROP TABLE ${table}`);
    }
  }, 120_000);
});
