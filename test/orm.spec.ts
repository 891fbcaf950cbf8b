import { execFile } from 'node:child_process';
import { createRequire } from 'node:module';
import { promisify } from 'node:util';
import { IsolationLevel, MikroORM } from '@mikro-orm/postgresql';
import { PrismaPg } from '@prisma/adapter-pg';
import { sql } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/node-postgres';
import { CompiledQuery, Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { DataSource } from 'typeorm';
import {
  addItemDrizzle,
  addItemKysely,
  addItemMikroOrm,
  addItemPg,
  addItemPrisma,
  addItemTypeOrm,
  drizzleExecutor,
  kyselyExecutor,
} from '../examples/orm-recipes.js';
import { defineChannel, type OutOfSyncEvent, type PglnExecutor } from '../lib/index.js';
import { createTestApp, type TestApp } from './support/app.js';
import { adminPool, databaseUrl, poolOnDroppedDatabase, unique } from './support/database.js';
import { waitFor } from './support/wait.js';
import { TransactionProbe } from './support/transactions.js';
import { PrismaClient } from './orm/prisma/generated/client.js';

/**
 * Transactional notify with every major ORM, each on the real server, each with the same three
 * cases, through the executors of examples/orm-recipes.ts; and those recipes, as the README shows
 * them, each run once.
 */

const admin = adminPool();
afterAll(() => admin.end());
const execFileAsync = promisify(execFile);

/** One transaction of an ORM: how its users insert a row, and what they pass to notify as `executor`. */
interface Steps {
  insert(id: string, name: string | null): Promise<unknown>;
  executor: PglnExecutor;
}

/** A reload's read in one REPEATABLE READ transaction of an ORM: what records its snapshot, and a count of the probe's rows. */
interface Read {
  executor: PglnExecutor;
  count(): Promise<number>;
}

interface Orm {
  /** Runs `body` in one transaction of the ORM: committed if it resolves, rolled back if it throws. */
  transaction(body: (steps: Steps) => Promise<void>): Promise<void>;
  /** Runs `body` in one REPEATABLE READ transaction of the ORM (an exactly-once reload). */
  repeatableRead(body: (read: Read) => Promise<number>): Promise<number>;
  close(): Promise<void>;
}

interface OrmCase {
  open(probe: TransactionProbe): Promise<Orm>;
}

// --- TypeORM: an EntityManager (or QueryRunner) has query(text, values): pass it as is.
const typeorm: OrmCase = {
  async open(probe) {
    const dataSource = await new DataSource({ type: 'postgres', url: databaseUrl(), entities: [] }).initialize();
    return {
      transaction: (body) =>
        dataSource.transaction((manager) =>
          body({
            insert: (id, name) => manager.query(probe.insertSql, [id, name]),
            executor: manager,
          }),
        ),
      // The manager returns rows, as snapshot() needs.
      repeatableRead: (body) =>
        dataSource.transaction('REPEATABLE READ', (manager) =>
          body({ executor: manager, count: async () => (await manager.query(probe.countSql))[0].n }),
        ),
      close: () => dataSource.destroy(),
    };
  },
};

// --- Prisma 7 (driver adapter @prisma/adapter-pg): spread the values; $executeRawUnsafe, since
// pg_notify returns void, which $queryRawUnsafe cannot read.
const prisma: OrmCase = {
  async open(probe) {
    const client = new PrismaClient({ adapter: new PrismaPg({ connectionString: databaseUrl() }) });
    return {
      transaction: (body) =>
        client.$transaction((tx) =>
          body({
            insert: (id, name) => tx.$executeRawUnsafe(probe.insertSql, id, name),
            executor: (text, values) => tx.$executeRawUnsafe(text, ...values),
          }),
        ),
      // snapshot() reads a row: $queryRawUnsafe here.
      repeatableRead: (body) =>
        client.$transaction(
          (tx) =>
            body({
              executor: (text, values) => tx.$queryRawUnsafe(text, ...values),
              count: async () => (await tx.$queryRawUnsafe<{ n: number }[]>(probe.countSql))[0]!.n,
            }),
          { isolationLevel: 'RepeatableRead' },
        ),
      close: () => client.$disconnect(),
    };
  },
};

// --- Drizzle (node-postgres driver).
const drizzleOrm: OrmCase = {
  async open(probe) {
    const pool = new pg.Pool({ connectionString: databaseUrl(), max: 2 });
    const db = drizzle({ client: pool });
    return {
      transaction: (body) =>
        db.transaction((tx) =>
          body({
            insert: (id, name) => tx.execute(sql`INSERT INTO ${sql.identifier(probe.table)} (id, name) VALUES (${id}, ${name})`),
            executor: drizzleExecutor(tx),
          }),
        ),
      repeatableRead: (body) =>
        db.transaction(
          (tx) => body({ executor: drizzleExecutor(tx), count: async () => (await tx.execute<{ n: number }>(sql.raw(probe.countSql))).rows[0]!.n }),
          { isolationLevel: 'repeatable read' },
        ),
      close: () => pool.end(),
    };
  },
};

// --- Kysely (PostgresDialect over a pg.Pool).
const kysely: OrmCase = {
  async open(probe) {
    const db = new Kysely<unknown>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: databaseUrl(), max: 2 }) }) });
    return {
      transaction: (body) =>
        db
          .transaction()
          .execute((trx) =>
            body({
              insert: (id, name) => trx.executeQuery(CompiledQuery.raw(probe.insertSql, [id, name])),
              executor: kyselyExecutor(trx),
            }),
          ),
      repeatableRead: (body) =>
        db
          .transaction()
          .setIsolationLevel('repeatable read')
          .execute((trx) =>
            body({ executor: kyselyExecutor(trx), count: async () => (await trx.executeQuery<{ n: number }>(CompiledQuery.raw(probe.countSql))).rows[0]!.n }),
          ),
      close: () => db.destroy(),
    };
  },
};

// --- MikroORM 7: its own execute() takes `?` placeholders and inlines arrays, so run the
// statement on the transaction's Kysely connection instead.
const mikroOrm: OrmCase = {
  async open(probe) {
    const orm = await MikroORM.init({ clientUrl: databaseUrl(), entities: [], discovery: { warnWhenNoEntities: false } });
    return {
      transaction: (body) =>
        orm.em.fork().transactional((em) =>
          body({
            insert: (id, name) => em.execute(`INSERT INTO ${probe.table} (id, name) VALUES (?, ?)`, [id, name]),
            executor: kyselyExecutor(em.getTransactionContext()!),
          }),
        ),
      repeatableRead: (body) =>
        orm.em.fork().transactional(
          (em) =>
            body({
              executor: kyselyExecutor(em.getTransactionContext()!),
              count: async () => (await em.execute<{ n: number }[]>(probe.countSql))[0]!.n,
            }),
          { isolationLevel: IsolationLevel.REPEATABLE_READ },
        ),
      close: () => orm.close(true),
    };
  },
};

const ORMS: [string, OrmCase][] = [
  ['TypeORM', typeorm],
  ['Prisma 7', prisma],
  ['Drizzle', drizzleOrm],
  ['Kysely', kysely],
  ['MikroORM', mikroOrm],
];

describe.each(ORMS)('notify inside a %s transaction', (_, orm) => {
  let t: TestApp;
  let probe: TransactionProbe;
  let db: Orm;
  beforeAll(async () => {
    t = await createTestApp();
    probe = new TransactionProbe(admin);
    await probe.start(t);
    db = await orm.open(probe);
  });
  afterAll(async () => {
    await db?.close();
    await probe?.stop();
    await t?.app.close();
  });

  it('committed: delivered once, after the row is visible to the listener', async () => {
    await db.transaction(async ({ insert, executor }) => {
      await insert('a', 'first');
      await t.pgln.notify(probe.channel, 'a', { executor });
    });
    expect(await probe.settle(t)).toEqual(['a:visible']);
  });

  it('notifyMany committed: all delivered, in order, after their rows are visible', async () => {
    await db.transaction(async ({ insert, executor }) => {
      await insert('d', 'fourth');
      await insert('e', 'fifth');
      await t.pgln.notifyMany([{ channel: probe.channel, payload: 'd' }, { channel: probe.channel, payload: 'e' }], { executor });
    });
    expect(await probe.settle(t)).toEqual(['d:visible', 'e:visible']);
  });

  it('rolled back: never delivered', async () => {
    const rollback = db.transaction(async ({ insert, executor }) => {
      await insert('b', 'second');
      await t.pgln.notify(probe.channel, 'b', { executor });
      throw new Error('rolled back on purpose');
    });
    await expect(rollback).rejects.toThrow('rolled back on purpose');
    expect(await probe.settle(t)).toEqual([]);
  });

  it('exactly once: a reload in its REPEATABLE READ transaction records the snapshot, and a change it read is not applied again', async () => {
    const Inserted = defineChannel<string>(`${probe.channel}_once`, { exactlyOnce: true });
    let rows = 0;
    let inserted = 0;
    const off = await t.pgln.listen(Inserted, {
      onOutOfSync: async (event: OutOfSyncEvent) => {
        if (event.reason === 'manual') {
          // Committed before the read below, announced on the channel: it arrives while the reload runs.
          const id = `once_${++inserted}`;
          await admin.query(`WITH i AS (INSERT INTO ${probe.table} (id, name) VALUES ($1, 'x') RETURNING id) SELECT pg_notify($2, json_build_object('$x', pg_current_xact_id()::text, '$p', id)::text) FROM i`, [id, Inserted.name]);
        }
        rows = await db.repeatableRead(async ({ executor, count }) => {
          await event.snapshot(executor);
          return count();
        });
      },
      onNotification: () => void rows++,
    });
    try {
      const skipped = t.pgln.stats().skippedBySnapshot;
      await t.pgln.resync(Inserted);
      await t.pgln.notify(Inserted, 'after');
      const table = (await admin.query<{ n: number }>(probe.countSql)).rows[0]!.n;
      // The row inserted during the reload counted once (by the read), 'after' once (by its notification).
      await waitFor('the last notification', () => rows === table + 1).catch(() => undefined);
      expect(rows).toBe(table + 1);
      expect(t.pgln.stats().skippedBySnapshot).toBe(skipped + 1);
    } finally {
      await off();
    }
  });

  it('in a transaction that fails after the notify: never delivered', async () => {
    const failing = db.transaction(async ({ insert, executor }) => {
      await t.pgln.notify(probe.channel, 'c', { executor });
      await insert('c', null); // violates NOT NULL
    });
    const failure = (await failing.then(() => undefined, (error: Error) => error)) as Error | undefined;
    // Some ORMs wrap the driver's error (Drizzle: "Failed query: ..."), keeping it as the cause.
    expect(`${failure?.message} ${(failure?.cause as Error | undefined)?.message}`).toMatch(/null value in column "name"/);
    expect(await probe.settle(t)).toEqual([]);
  });
});

/**
 * The README's recipes (examples/orm-recipes.ts) as they are, on a database of their own (table
 * and channel `items`): each committed write is delivered once, after its row is visible.
 */
describe("the README's recipes, each run against a real server", () => {
  const database = unique('pgln_recipes');
  let url: string;
  let pool: pg.Pool;
  let t: TestApp;
  let probe: TransactionProbe;

  beforeAll(async () => {
    await admin.query(`CREATE DATABASE ${database}`);
    const parsed = new URL(databaseUrl());
    parsed.pathname = `/${database}`;
    url = parsed.toString();
    pool = poolOnDroppedDatabase({ connectionString: url, max: 2 });
    t = await createTestApp({}, { connectionString: url });
    probe = new TransactionProbe(pool, { table: 'items', channel: 'items' });
    await probe.start(t);
  });
  afterAll(async () => {
    await probe?.stop();
    await t?.app.close();
    await pool?.end();
    await admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
  });

  const recipes: [string, (id: string) => Promise<void>][] = [
    ['node-postgres', (id) => addItemPg(pool, t.pgln, id, 'pg')],
    ['TypeORM', async (id) => {
      const dataSource = await new DataSource({ type: 'postgres', url, entities: [] }).initialize();
      await addItemTypeOrm(dataSource, t.pgln, id, 'typeorm').finally(() => dataSource.destroy());
    }],
    ['Prisma 7', async (id) => {
      const prisma = new PrismaClient({ adapter: new PrismaPg({ connectionString: url }) });
      await addItemPrisma(prisma, t.pgln, id, 'prisma').finally(() => prisma.$disconnect());
    }],
    ['Kysely', async (id) => {
      const db = new Kysely<unknown>({ dialect: new PostgresDialect({ pool: poolOnDroppedDatabase({ connectionString: url, max: 1 }) }) });
      await addItemKysely(db, t.pgln, id, 'kysely').finally(() => db.destroy());
    }],
    ['MikroORM 7', async (id) => {
      const orm = await MikroORM.init({ clientUrl: url, entities: [], discovery: { warnWhenNoEntities: false } });
      await addItemMikroOrm(orm, t.pgln, id, 'mikro-orm').finally(() => orm.close(true));
    }],
    ['Drizzle', async (id) => {
      const client = poolOnDroppedDatabase({ connectionString: url, max: 1 });
      await addItemDrizzle(drizzle({ client }), t.pgln, id, 'drizzle').finally(() => client.end());
    }],
  ];

  it.each(recipes)('%s', async (name, addItem) => {
    await addItem(name);
    expect(await probe.settle(t)).toEqual([`${name}:visible`]);
  });
});

/**
 * @nestjs-cls/transactional (TypeORM adapter): test/orm/nestjs-cls/item-writer.app.ts is a NestJS
 * application whose service notifies inside its ambient transaction. It runs as a Node process of
 * its own (Jest's module system on Node 20 cannot load nestjs-cls, CommonJS, requiring NestJS 12,
 * ESM only; Node itself can), compiled with this project's TypeScript; this test listens.
 */
describe('notify inside an @nestjs-cls/transactional transaction (TypeORM adapter)', () => {
  const dir = 'test/orm/nestjs-cls';
  let t: TestApp;
  let probe: TransactionProbe;

  /** Runs one step of the app: resolves with its outcome line. */
  async function runApp(step: 'commit' | 'batch' | 'rollback' | 'fail-later'): Promise<{ ok?: true; error?: string }> {
    const env = { ...process.env, DATABASE_URL: databaseUrl(), TABLE: probe.table, CHANNEL: probe.channel };
    const { stdout } = await execFileAsync(process.execPath, [`${dir}/dist/${dir}/item-writer.app.js`, step], { env });
    return JSON.parse(stdout.trim().split('\n').at(-1)!);
  }

  beforeAll(async () => {
    const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
    await execFileAsync(process.execPath, [tsc, '-p', `${dir}/tsconfig.json`]);
    t = await createTestApp();
    probe = new TransactionProbe(admin);
    await probe.start(t);
  }, 60_000);
  afterAll(async () => {
    await probe?.stop();
    await t?.app.close();
  });

  it('committed: delivered once, after the row is visible to the listener', async () => {
    expect(await runApp('commit')).toEqual({ ok: true });
    expect(await probe.settle(t)).toEqual(['a:visible']);
  });

  it('notifyMany committed: all delivered, in order, after their rows are visible', async () => {
    expect(await runApp('batch')).toEqual({ ok: true });
    expect(await probe.settle(t)).toEqual(['d:visible', 'e:visible']);
  });

  it('rolled back: never delivered', async () => {
    expect(await runApp('rollback')).toEqual({ error: 'rolled back on purpose' });
    expect(await probe.settle(t)).toEqual([]);
  });

  it('in a transaction that fails after the notify: never delivered', async () => {
    expect((await runApp('fail-later')).error).toMatch(/null value in column "name"/);
    expect(await probe.settle(t)).toEqual([]);
  });
});
