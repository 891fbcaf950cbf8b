import { Injectable } from '@nestjs/common';
import pg from 'pg';
import { OnNotification, OnOutOfSync } from '../lib/index.js';
import { startEmbeddedPostgres, type EmbeddedServer } from '../tools/embedded-postgres.js';
import { createTestApp, throughProxy, type TestApp } from './support/app.js';
import { databaseUrl, ownsServer, terminate, unique } from './support/database.js';
import { createProductsTable, dropProductsTable, readTable, type ProductChange } from './support/products.js';
import { TcpProxy } from './support/tcp-proxy.js';
import { StateLog, waitFor } from './support/wait.js';

const ROWS = 50;

/**
 * The headline: an in-memory copy of a table, kept by @OnOutOfSync + @OnNotification, stays
 * exactly equal to the table while a writer changes it continuously and every fault we can
 * produce hits the LISTEN connection in turn.
 */
describe('zero loss', () => {
  let server: EmbeddedServer | undefined;
  let url: string;
  let db: pg.Pool;
  let proxy: TcpProxy;
  let t: TestApp | undefined;
  const table = unique('zero_loss');
  const channel = unique('zero_loss');
  let writing = false;
  let writes = 0;
  let writer: Promise<void> | undefined;

  beforeAll(async () => {
    // A server restart needs a server the test owns: in embedded mode it starts one of its own.
    server = ownsServer() ? await startEmbeddedPostgres() : undefined;
    url = server?.url ?? databaseUrl();
    db = new pg.Pool({ connectionString: url, max: 4, application_name: 'zero-loss-writer' });
    db.on('error', () => undefined); // idle clients die with the server restart
    await createProductsTable(db, table, channel, ROWS);
    proxy = await TcpProxy.forUrl(url).start();
  });

  afterAll(async () => {
    writing = false;
    await writer;
    await t?.app.close();
    await proxy.stop();
    await dropProductsTable(db, table).catch(() => undefined);
    await db.end();
    await server?.destroy();
  });

  it('keeps the copy equal to the table through terminate, reset, blackhole, refusal and restart', async () => {
    @Injectable()
    class Copy {
      rows = new Map<number, number>();
      /** Every version each row took in the copy, in order. */
      readonly history = new Map<number, number[]>();
      resyncs = 0;
      resyncing = false;
      /** Notifications delivered while the out-of-sync handler was running (must stay 0). */
      deliveredDuringResync = 0;

      private take(id: number, version: number) {
        if (this.rows.get(id) === version) return;
        this.rows.set(id, version);
        const versions = this.history.get(id) ?? [];
        versions.push(version);
        this.history.set(id, versions);
      }

      @OnOutOfSync(channel)
      async reload() {
        this.resyncing = true;
        try {
          const before = writes;
          const fresh = await readTable(db, table);
          for (const [id, version] of fresh) this.take(id, version);
          // A real reload takes a while: let writes commit meanwhile. Their notifications must be held.
          await waitFor('writes during the resync', () => writes >= before + 3);
          this.resyncs += 1;
        } finally {
          this.resyncing = false;
        }
      }

      @OnNotification(channel, { json: true })
      apply(change: ProductChange) {
        if (this.resyncing) this.deliveredDuringResync += 1;
        // A held notification may describe a state the reload already saw: keep the newer.
        if ((this.rows.get(change.id) ?? 0) < change.version) this.take(change.id, change.version);
      }
    }

    // The writer runs from before the first reload to the end.
    writing = true;
    writer = (async () => {
      while (writing) {
        const id = 1 + Math.floor(Math.random() * ROWS);
        try {
          await db.query(`UPDATE ${table} SET version = version + 1 WHERE id = $1`, [id]);
          writes += 1;
        } catch {
          // The server is restarting: wait until it answers (or the test ends), then go on writing.
          await waitFor('the database to answer again or the test to end', () =>
            !writing || db.query('SELECT 1').then(() => true, () => false),
          ).catch(() => undefined);
        }
      }
    })();

    t = await createTestApp(
      { providers: [Copy] },
      {
        connectionString: url,
        ...throughProxy(proxy),
        healthCheck: { intervalMs: 100, timeoutMs: 300 },
        reconnect: { initialDelayMs: 10, maxDelayMs: 100 },
      },
    );
    const app = t;
    const copy = t.get(Copy);
    const states = new StateLog(t.pgln);

    /**
     * Injects a fault, waits for the listener to notice, and lifts it. For an outage the harness
     * can hold open, 20 more writes commit while nobody listens first.
     */
    const outage = async (
      inject: () => Promise<unknown> | void,
      lift?: () => Promise<unknown> | void,
      { writesWhileDown = true } = {},
    ) => {
      const losses = states.count('reconnecting');
      await inject();
      await states.reach('reconnecting', losses + 1, 20_000);
      if (lift) {
        if (writesWhileDown) {
          const before = writes;
          await waitFor('writes during the outage', () => writes >= before + 20, { timeoutMs: 20_000 });
        }
        await lift();
      }
      await states.reach('live', losses + 2, 30_000);
    };

    await outage(() => terminate(db, `${app.appName}-listener`));
    await outage(() => proxy.resetAll());
    await outage(
      () => proxy.blackhole(true),
      () => proxy.blackhole(false),
    );
    await outage(
      () => {
        proxy.refuse(true);
        proxy.resetAll();
      },
      () => proxy.refuse(false),
    );
    if (server) {
      // Nothing can be written while the server is down; the writer resumes as it comes back.
      await outage(
        () => server!.stop(),
        () => server!.start(),
        { writesWhileDown: false },
      );
    } else {
      console.log('zero-loss: server restart skipped: PGLN_TEST_DATABASE_URL points at a server the tests do not own');
    }

    writing = false;
    await writer;
    const table_ = await readTable(db, table);
    await waitFor('the copy to equal the table', () => equal(copy.rows, table_), { timeoutMs: 15_000 });

    const disconnects = states.count('reconnecting');
    expect(disconnects).toBe(server ? 5 : 4);
    expect(copy.rows).toEqual(table_);
    expect(copy.deliveredDuringResync).toBe(0);
    expect(copy.resyncs).toBe(disconnects + 1);
    for (const [id, versions] of copy.history) {
      const increasing = versions.every((version, i) => i === 0 || version > versions[i - 1]!);
      if (!increasing) throw new Error(`row ${id} went back in time: ${versions.join(' > ')}`);
    }
    expect(writes).toBeGreaterThan(100);
  });
});

function equal(a: Map<number, number>, b: Map<number, number>): boolean {
  if (a.size !== b.size) return false;
  for (const [key, value] of a) if (b.get(key) !== value) return false;
  return true;
}
