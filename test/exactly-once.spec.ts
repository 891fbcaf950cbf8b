import pg from 'pg';
import { defineChannel, type OutOfSyncEvent, type PglnChannel, type PglnService } from '../lib/index.js';
import { encodeNotification } from '../lib/pgln.notify-query.js';
import { transactionOf, unwrap } from '../lib/channel/exactly-once.js';
import { parseSnapshot, visibleIn } from '../lib/channel/snapshot.js';
import { createTestApp, throughProxy, type TestApp } from './support/app.js';
import { adminPool, databaseUrl, terminate, unique } from './support/database.js';
import { TcpProxy } from './support/tcp-proxy.js';
import { StateLog, waitFor } from './support/wait.js';

/**
 * Exactly once across resyncs: a counter that its reload sets with `SELECT count(*)` and that each
 * notification increments is exact only if no notification is applied that the reload already
 * counted. Its reload records its snapshot (`event.snapshot`) on an exactly-once channel; a second
 * counter, the same without the snapshot, shows what happens otherwise: it drifts upward.
 */

const admin = adminPool();
afterAll(() => admin.end());

/** A counter of the table's rows, kept by one listen(). */
class Counter {
  value = 0;
  /** The next reload waits for this before it reads: until enough notifications piled up to overflow a queue. */
  holdNext?: () => Promise<unknown>;

  constructor(
    private readonly table: string,
    private readonly pool: pg.Pool,
    /** Record the reload's snapshot (exactly once), or not (changes may be counted twice). */
    private readonly snapshot: boolean,
  ) {}

  readonly onNotification = (): void => {
    this.value++;
  };

  readonly onOutOfSync = async (event: OutOfSyncEvent): Promise<void> => {
    const hold = this.holdNext;
    this.holdNext = undefined;
    // A read that takes a little while, so that rows are committed during it (what the naive counter counts twice).
    const pause = async (client: pg.PoolClient) => (hold ? hold() : client.query('SELECT pg_sleep(0.05)'));
    const client = await this.pool.connect();
    try {
      if (this.snapshot) {
        // One snapshot for every statement of the transaction: the count is the snapshot's.
        await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
        await event.snapshot(client);
        await pause(client);
        this.value = Number((await client.query<{ n: string }>(`SELECT count(*) AS n FROM ${this.table}`)).rows[0]!.n);
        await client.query('COMMIT');
      } else {
        // Rows committed meanwhile are counted, and their notifications arrive after the read began.
        await pause(client);
        this.value = Number((await client.query<{ n: string }>(`SELECT count(*) AS n FROM ${this.table}`)).rows[0]!.n);
      }
    } finally {
      client.release();
    }
  };
}

/** Inserts rows as fast as it can on `connections` connections, each insert notifying in its own transaction, until stopped. */
class Writer {
  inserts = 0;
  private running = true;
  private readonly done: Promise<void[]>;

  constructor(pool: pg.Pool, pgln: PglnService, table: string, channel: PglnChannel<{ id: number }>, connections: number) {
    this.done = Promise.all(
      Array.from({ length: connections }, async () => {
        const client = await pool.connect();
        try {
          while (this.running) {
            await client.query('BEGIN');
            const { rows } = await client.query<{ id: number }>(`INSERT INTO ${table} DEFAULT VALUES RETURNING id`);
            await pgln.notify(channel, { id: rows[0]!.id }, { executor: client });
            await client.query('COMMIT');
            this.inserts++;
          }
        } finally {
          client.release();
        }
      }),
    );
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.done;
  }
}

describe('an exactly-once channel whose reload records its snapshot', () => {
  it('keeps a counter exact through kills, resets, half-open connections, resync() and an overflow; without the snapshot it drifts upward', async () => {
    const table = unique('counted');
    const Counted = defineChannel<{ id: number }>(unique('counted'), { exactlyOnce: true });
    await admin.query(`CREATE TABLE ${table} (id bigserial PRIMARY KEY)`);
    const pool = new pg.Pool({ connectionString: databaseUrl(), max: 8 });
    const proxy = await TcpProxy.forUrl(databaseUrl()).start();
    let t: TestApp | undefined;
    let writer: Writer | undefined;
    try {
      // A queue long enough that a reload after a reconnect never overflows, however fast the writers (an
      // overflow during every reload would keep the channel resyncing); the one overflow is made below.
      t = await createTestApp({}, { ...throughProxy(proxy), maxQueuedNotifications: 2_000, healthCheck: { intervalMs: 100, timeoutMs: 300 } });
      const exact = new Counter(table, pool, true);
      const naive = new Counter(table, pool, false);
      await t.pgln.listen(Counted, exact);
      await t.pgln.listen(Counted, naive);
      writer = new Writer(pool, t.pgln, table, Counted, 4);
      const states = new StateLog(t.pgln);
      const app = t;
      const progress = async (count: number) => {
        const target = writer!.inserts + count;
        await waitFor(`${count} more inserts`, () => writer!.inserts >= target, { timeoutMs: 20_000 });
      };
      const recovered = async (lives: number) => {
        await states.reach('live', lives, 20_000);
        await progress(200);
      };
      await progress(500);
      // A killed backend, a reset, a half-open connection: each a reconnect and a resync.
      expect(await terminate(admin, `${app.appName}-listener`)).toBe(1);
      await recovered(2);
      proxy.resetAll();
      await recovered(3);
      proxy.blackhole(true);
      await states.reach('reconnecting', 3, 10_000);
      proxy.blackhole(false);
      await recovered(4);
      // resync() twice, the second reading only once a queue overflowed meanwhile.
      await app.pgln.resync(Counted);
      await progress(200);
      const dropped = app.pgln.stats().dropped;
      exact.holdNext = naive.holdNext = () => waitFor('a queue to overflow', () => app.pgln.stats().dropped > dropped, { timeoutMs: 30_000 });
      await app.pgln.resync(Counted);
      await progress(200);
      expect(app.pgln.stats().dropped).toBeGreaterThan(0);
      expect(app.pgln.stats().resyncs.overflow).toBeGreaterThan(0);
      await writer.stop();

      const rows = Number((await admin.query<{ n: string }>(`SELECT count(*) AS n FROM ${table}`)).rows[0]!.n);
      expect(rows).toBe(writer.inserts);
      // One more notification, after every insert's: once it is counted, everything before it was.
      await app.pgln.notify(Counted, { id: -1 });
      await waitFor('the last notification to be counted', () => exact.value === rows + 1, { timeoutMs: 10_000 }).catch(() => undefined);
      expect(exact.value).toBe(rows + 1);
      expect(app.pgln.stats().skippedBySnapshot).toBeGreaterThan(0);
      // The same counter without the snapshot counted rows twice: those its reads saw and were then given.
      expect(naive.value).toBeGreaterThan(rows + 1);
    } finally {
      await writer?.stop();
      await t?.app.close();
      await proxy.stop();
      await pool.end();
      await admin.query(`DROP TABLE IF EXISTS ${table}`);
    }
  }, 120_000);
});

describe('the exactly-once envelope and snapshots', () => {
  it('parses pg_current_snapshot(), an empty in-progress list included, and compares ids as BigInt', () => {
    expect(parseSnapshot('100:105:')).toEqual({ xmin: 100n, xmax: 105n, inProgress: new Set() });
    const snapshot = parseSnapshot('4294967390:4294967400:4294967391,4294967395')!;
    expect(snapshot.inProgress).toEqual(new Set([4294967391n, 4294967395n]));
    // Past 2^32 (xid8 after a wraparound of the 32-bit xid): compared as numbers, not strings.
    expect(visibleIn(4294967389n, snapshot)).toBe(true);
    expect(visibleIn(4294967391n, snapshot)).toBe(false); // in progress when taken
    expect(visibleIn(4294967392n, snapshot)).toBe(true);
    expect(visibleIn(4294967400n, snapshot)).toBe(false); // from xmax on
    expect(visibleIn(99999999999n, snapshot)).toBe(false);
    expect(parseSnapshot('not a snapshot')).toBeUndefined();
  });

  it('reads the transaction id from the envelope as PostgreSQL writes it, and leaves other payloads alone', () => {
    expect(unwrap(JSON.parse('{"$x" : "123", "$p" : {"id" : 1}}'))).toEqual({ xid: 123n, payload: { id: 1 } });
    expect(transactionOf('{"$x" : "18446744073709551615", "$p" : null}')).toBe(18446744073709551615n);
    expect(unwrap({ id: 1 })).toEqual({ payload: { id: 1 } });
    expect(unwrap({ $x: 'abc', $p: 1 })).toEqual({ payload: { $x: 'abc', $p: 1 } });
    expect(transactionOf('{"id":1}')).toBeUndefined();
    expect(transactionOf('{"$x" : broken')).toBeUndefined();
  });

  it('counts the envelope against the payload limit: 7959 bytes of payload go, 7960 do not', () => {
    const Once = defineChannel<string>(unique('limit'), { exactlyOnce: true });
    // JSON of a string of n characters is n + 2 bytes.
    expect(() => encodeNotification(Once, 'a'.repeat(7957))).not.toThrow();
    expect(() => encodeNotification(Once, 'a'.repeat(7958))).toThrow(
      /is 7960 bytes in UTF-8; pg_notify accepts at most 7999 bytes, of which the exactly-once envelope takes 40 \(so at most 7959 for the payload\)/,
    );
  });
});

describe('an exactly-once channel on the wire', () => {
  it('is sent wrapped by every form (notify, notifyMany beside a plain channel, their queries on a connection of yours), and a foreign sender’s payload is delivered as it is and counted', async () => {
    const Once = defineChannel<{ n: number }>(unique('wire'), { exactlyOnce: true });
    const plain = unique('wire_plain');
    const t = await createTestApp();
    const raw = new pg.Client({ connectionString: databaseUrl() });
    const wire: string[] = [];
    raw.on('notification', (message) => wire.push(`${message.channel === plain ? 'plain' : 'once'} ${message.payload}`));
    try {
      await raw.connect();
      await raw.query(`LISTEN "${Once.name}"; LISTEN "${plain}"`);
      const received: { n: number }[] = [];
      await t.pgln.listen(Once, { onNotification: (payload) => void received.push(payload) });
      await t.pgln.notify(Once, { n: 1 });
      await t.pgln.notifyMany([
        { channel: Once, payload: { n: 2 } },
        { channel: plain, payload: 'as it is' },
      ]);
      const client = await admin.connect();
      try {
        const one = t.pgln.notifyQuery(Once, { n: 3 });
        await client.query(one.text, one.values);
        const many = t.pgln.notifyManyQuery([{ channel: Once, payload: { n: 4 } }]);
        await client.query(many.text, many.values);
      } finally {
        client.release();
      }
      await admin.query('SELECT pg_notify($1, $2)', [Once.name, JSON.stringify({ n: 5 })]); // a foreign sender
      await waitFor('all five', () => received.length === 5);
      expect(received).toEqual([{ n: 1 }, { n: 2 }, { n: 3 }, { n: 4 }, { n: 5 }]);
      await waitFor('the raw listener to hear all six', () => wire.length === 6);
      expect(wire.filter((line) => line.startsWith('once ')).slice(0, 4).every((line) => /^once \{"\$x" : "\d+", "\$p" : \{"n":\d\}\}$/.test(line))).toBe(true);
      expect(wire).toContain('plain as it is');
      expect(wire).toContain('once {"n":5}');
      expect(t.pgln.stats().channels[Once.name]!.withoutTransactionId).toBe(1);
    } finally {
      await raw.end();
      await t.app.close();
    }
  });

  it('records a snapshot through the executors ORMs give, and says so when one returns no rows', async () => {
    const channel = defineChannel(unique('shapes'), { exactlyOnce: true });
    const t = await createTestApp();
    try {
      const client = await admin.connect();
      const results: string[] = [];
      const shapes: [string, (text: string, values: unknown[]) => Promise<unknown>][] = [
        ['pg { rows }', (text, values) => client.query(text, values)],
        ['a rows array', async (text, values) => (await client.query(text, values)).rows],
        ['[rows, count]', async (text, values) => [(await client.query(text, values)).rows, 1]],
        ['a count (Prisma $executeRawUnsafe)', async () => 1],
      ];
      try {
        for (const [name, executor] of shapes) {
          const off = await t.pgln.listen(channel, {
            onOutOfSync: async (event) => {
              try {
                await event.snapshot(executor);
                results.push(`${name}: recorded`);
              } catch (error) {
                results.push(`${name}: ${(error as Error).message}`);
              }
            },
          });
          await off();
        }
      } finally {
        client.release();
      }
      expect(results.slice(0, 3)).toEqual(['pg { rows }: recorded', 'a rows array: recorded', '[rows, count]: recorded']);
      expect(results[3]).toMatch(/^a count \(Prisma \$executeRawUnsafe\): event\.snapshot\(executor\) read no snapshot: the executor answered 1\. Give it something that returns rows/);
    } finally {
      await t.app.close();
    }
  });
});

describe('a reload retried after it failed', () => {
  it('keeps only the successful attempt’s snapshot: one that recorded none skips nothing', async () => {
    const Once = defineChannel<string>(unique('retried'), { exactlyOnce: true });
    const t = await createTestApp({}, { reconnect: { initialDelayMs: 5, maxDelayMs: 5 } });
    try {
      const received: string[] = [];
      let attempts = 0;
      await t.pgln.listen(Once, {
        onOutOfSync: async (event: OutOfSyncEvent) => {
          if (event.reason !== 'manual') return;
          if (++attempts > 1) return; // the retry reads without recording a snapshot
          // Committed before the snapshot this failing attempt records, arriving while it runs.
          await admin.query(`SELECT pg_notify($1, json_build_object('$x', pg_current_xact_id()::text, '$p', 'seen by the failed attempt')::text)`, [Once.name]);
          const client = await admin.connect();
          try {
            await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
            await event.snapshot(client);
            await client.query('COMMIT');
          } finally {
            client.release();
          }
          throw new Error('the reload failed after recording its snapshot');
        },
        onNotification: (payload) => void received.push(payload),
        onError: () => undefined,
      });
      await t.pgln.resync(Once);
      await t.pgln.notify(Once, 'after');
      await waitFor('"after"', () => received.includes('after'));
      expect(attempts).toBe(2);
      expect(received).toEqual(['seen by the failed attempt', 'after']);
      expect(t.pgln.stats().skippedBySnapshot).toBe(0);
    } finally {
      await t.app.close();
    }
  });
});
