import { Injectable } from '@nestjs/common';
import pg from 'pg';
import { OnNotification, OnOutOfSync } from '../lib/index.js';
import { createTestApp, throughProxy, type TestApp } from './support/app.js';
import { terminate, unique } from './support/database.js';
import { LocalServer } from './support/replication.js';
import { createProductsTable, dropProductsTable, readTable, type ProductChange } from './support/products.js';
import { TcpProxy } from './support/tcp-proxy.js';
import { StateLog, waitFor } from './support/wait.js';

const ROWS = 50;

/** Updates random rows as fast as the database allows, until stopped; can pause. */
class Writer {
  writes = 0;
  private running = true;
  private gate?: { promise: Promise<void>; open: () => void };
  private parked?: () => void;
  private readonly done: Promise<void>;

  constructor(
    private readonly db: pg.Pool,
    private readonly table: string,
  ) {
    this.done = this.loop();
  }

  /** Resolves once no write is in flight; writing waits until {@link resume}. */
  pause(): Promise<void> {
    let open!: () => void;
    this.gate = { promise: new Promise<void>((resolve) => (open = resolve)), open };
    return new Promise((resolve) => (this.parked = resolve));
  }

  resume(): void {
    this.gate?.open();
    this.gate = undefined;
  }

  async stop(): Promise<void> {
    this.running = false;
    this.resume();
    await this.done;
  }

  private async loop(): Promise<void> {
    while (this.running) {
      if (this.gate) {
        this.parked?.();
        await this.gate.promise;
        continue;
      }
      const id = 1 + Math.floor(Math.random() * ROWS);
      try {
        await this.db.query(`UPDATE ${this.table} SET version = version + 1 WHERE id = $1`, [id]);
        this.writes += 1;
      } catch {
        // The server is restarting: wait until it answers (or the test ends), then go on writing.
        await waitFor('the database to answer again or the test to end', () =>
          !this.running || this.db.query('SELECT 1').then(() => true, () => false),
        ).catch(() => undefined);
      }
    }
  }
}

/**
 * The headline: an in-memory copy of a table, kept by @OnOutOfSync + @OnNotification, stays
 * exactly equal to the table while a writer changes it continuously and every fault we can
 * produce hits the LISTEN connection in turn.
 */
describe('zero loss', () => {
  let server: LocalServer;
  let url: string;
  let db: pg.Pool;
  let proxy: TcpProxy;
  let t: TestApp | undefined;
  const table = unique('zero_loss');
  const channel = unique('zero_loss');
  let writer: Writer | undefined;

  beforeAll(async () => {
    // A server restart needs a server of its own: the version under test (see LocalServer).
    server = await LocalServer.primary();
    url = server.url;
    db = new pg.Pool({ connectionString: url, max: 4, application_name: 'zero-loss-writer' });
    db.on('error', () => undefined); // idle clients die with the server restart
    await createProductsTable(db, table, channel, ROWS);
    proxy = await TcpProxy.forUrl(url).start();
  }, 120_000);

  afterAll(async () => {
    await writer?.stop();
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
      /** Every version delivered by notification for each row, in delivery order (before any filtering). */
      readonly delivered = new Map<number, number[]>();
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
          const before = writer!.writes;
          const fresh = await readTable(db, table);
          for (const [id, version] of fresh) this.take(id, version);
          // A real reload takes a while: let writes commit meanwhile. Their notifications must be held.
          await waitFor('writes during the resync', () => writer!.writes >= before + 3);
          this.resyncs += 1;
        } finally {
          this.resyncing = false;
        }
      }

      @OnNotification(channel, { json: true })
      apply(change: ProductChange) {
        if (this.resyncing) this.deliveredDuringResync += 1;
        const versions = this.delivered.get(change.id) ?? [];
        versions.push(change.version);
        this.delivered.set(change.id, versions);
        // A held notification may describe a state the reload already saw: keep the newer.
        if ((this.rows.get(change.id) ?? 0) < change.version) this.take(change.id, change.version);
      }
    }

    // The writer runs from before the first reload to the end.
    writer = new Writer(db, table);
    const w = writer;

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
     * With the writer paused, every change committed so far must reach the copy by notification
     * alone: no resync may help. A notification lost while live would show here.
     */
    const deliveredEverything = async () => {
      await w.pause();
      const resyncs = copy.resyncs;
      const now = await readTable(db, table);
      await waitFor('notifications to bring the copy up to the table', () => equal(copy.rows, now), { timeoutMs: 15_000 });
      expect(copy.resyncs).toBe(resyncs);
      w.resume();
    };

    /**
     * Lets the writer run while live, checks that nothing was lost, injects a fault, waits for the
     * listener to notice, and lifts it. For an outage the harness can hold open, 20 more writes
     * commit while nobody listens first.
     */
    const outage = async (
      inject: () => Promise<unknown> | void,
      lift?: () => Promise<unknown> | void,
      { writesWhileDown = true } = {},
    ) => {
      const live = w.writes;
      await waitFor('writes while live', () => w.writes >= live + 100, { timeoutMs: 20_000 });
      await deliveredEverything();
      const losses = states.count('reconnecting');
      await inject();
      await states.reach('reconnecting', losses + 1, 20_000);
      if (lift) {
        if (writesWhileDown) {
          const before = w.writes;
          await waitFor('writes during the outage', () => w.writes >= before + 20, { timeoutMs: 20_000 });
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
    // Nothing can be written while the server is down; the writer resumes as it comes back.
    await outage(
      () => server.stop(),
      () => server.start(),
      { writesWhileDown: false },
    );
    const afterFaults = w.writes;
    await waitFor('writes after the last fault', () => w.writes >= afterFaults + 100, { timeoutMs: 20_000 });
    await writer.stop();
    // The last writes, too, arrive by notification alone.
    const resyncs = copy.resyncs;
    const table_ = await readTable(db, table);
    await waitFor('notifications to bring the copy up to the table', () => equal(copy.rows, table_), { timeoutMs: 15_000 });
    expect(copy.resyncs).toBe(resyncs);

    const disconnects = states.count('reconnecting');
    expect(disconnects).toBe(5);
    expect(copy.rows).toEqual(table_);
    expect(copy.deliveredDuringResync).toBe(0);
    expect(copy.resyncs).toBe(disconnects + 1);
    const strictlyIncreasing = (versions: number[]) => versions.every((version, i) => i === 0 || version > versions[i - 1]!);
    for (const [id, versions] of copy.history) {
      if (!strictlyIncreasing(versions)) throw new Error(`row ${id} went back in time in the copy: ${versions.join(' > ')}`);
    }
    // PostgreSQL delivers in commit order; across reconnects some are missed, none may repeat or come out of order.
    for (const [id, versions] of copy.delivered) {
      if (!strictlyIncreasing(versions)) throw new Error(`row ${id}: notifications delivered out of order or twice: ${versions.join(' > ')}`);
    }
    const deliveries = [...copy.delivered.values()].reduce((sum, versions) => sum + versions.length, 0);
    expect(deliveries).toBeGreaterThan(500);
  });
});

function equal(a: Map<number, number>, b: Map<number, number>): boolean {
  if (a.size !== b.size) return false;
  for (const [key, value] of a) if (b.get(key) !== value) return false;
  return true;
}
