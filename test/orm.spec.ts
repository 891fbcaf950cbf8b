import { execFile } from 'node:child_process';
import { createRequire } from 'node:module';
import { promisify } from 'node:util';
import { MikroORM } from '@mikro-orm/postgresql';
import { PrismaPg } from '@prisma/adapter-pg';
import { sql } from 'drizzle-orm';
import { drizzle, type NodePgDatabase } from 'drizzle-orm/node-postgres';
import { CompiledQuery, Kysely, PostgresDialect, type ControlledTransaction } from 'kysely';
import pg from 'pg';
import { DataSource } from 'typeorm';
import type { PglnExecutor } from '../lib/index.js';
import { createTestApp, type TestApp } from './support/app.js';
import { adminPool, databaseUrl } from './support/database.js';
import { TransactionProbe } from './support/transactions.js';
import { PrismaClient } from './orm/prisma/generated/client.js';

/**
 * Transactional notify with every major ORM, each on the real server, each with the same three
 * cases. Each ORM's block below is the recipe the README shows: how to hand `notify` the ORM's
 * transaction.
 */

const admin = adminPool();
afterAll(() => admin.end());
const execFileAsync = promisify(execFile);

/** One transaction of an ORM: how its users insert a row, and what they pass to notify as `executor`. */
interface Steps {
  insert(id: string, name: string | null): Promise<unknown>;
  executor: PglnExecutor;
}

interface Orm {
  /** Runs `body` in one transaction of the ORM: committed if it resolves, rolled back if it throws. */
  transaction(body: (steps: Steps) => Promise<void>): Promise<void>;
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
      close: () => client.$disconnect(),
    };
  },
};

/** Drizzle runs SQL objects, not text: this turns `($1, $2)` text and values into one, values still bound. */
const drizzleExecutor =
  (tx: Pick<NodePgDatabase, 'execute'>): PglnExecutor =>
  (text, values) =>
    tx.execute(sql.join(text.split(/\$(\d+)/).map((part, i) => (i % 2 ? sql.param(values[Number(part) - 1]) : sql.raw(part)))));

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
      close: () => pool.end(),
    };
  },
};

/** Kysely runs a compiled raw query on the transaction. */
const kyselyExecutor =
  (trx: Pick<ControlledTransaction<unknown>, 'executeQuery'>): PglnExecutor =>
  (text, values) =>
    trx.executeQuery(CompiledQuery.raw(text, values));

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
