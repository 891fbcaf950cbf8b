/**
 * The README's "With your ORM": one write and its notification in one transaction, with each
 * library, on a table `items (id text PRIMARY KEY, name text NOT NULL)` announced on channel
 * `items`. test/orm.spec.ts runs each against a real server; the executors are the ones its
 * other cases (rollback, failure after the notify, exactly-once reads) use. The
 * @nestjs-cls/transactional recipe is in orm-recipes-cls.ts.
 */
import type { MikroORM } from '@mikro-orm/postgresql';
import { sql } from 'drizzle-orm';
import type { NodePgDatabase } from 'drizzle-orm/node-postgres';
import { CompiledQuery, type ControlledTransaction, type Kysely } from 'kysely';
import type { PglnExecutor, PglnService } from 'nestjs-pgln';
import type pg from 'pg';
import type { DataSource } from 'typeorm';
import type { PrismaClient } from '../test/orm/prisma/generated/client.js';

// node-postgres: the client running the transaction
export async function addItemPg(pool: pg.Pool, pgln: PglnService, id: string, name: string): Promise<void> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    await client.query('INSERT INTO items (id, name) VALUES ($1, $2)', [id, name]);
    await pgln.notify('items', id, { executor: client });
    await client.query('COMMIT');
  } catch (error) {
    await client.query('ROLLBACK');
    throw error;
  } finally {
    client.release();
  }
}

// TypeORM: the transaction's EntityManager
export async function addItemTypeOrm(dataSource: DataSource, pgln: PglnService, id: string, name: string): Promise<void> {
  await dataSource.transaction(async (manager) => {
    await manager.query('INSERT INTO items (id, name) VALUES ($1, $2)', [id, name]);
    await pgln.notify('items', id, { executor: manager });
  });
}

// Prisma 7: $executeRawUnsafe, since pg_notify returns void, which $queryRawUnsafe cannot read
export async function addItemPrisma(prisma: PrismaClient, pgln: PglnService, id: string, name: string): Promise<void> {
  await prisma.$transaction(async (tx) => {
    await tx.$executeRawUnsafe('INSERT INTO items (id, name) VALUES ($1, $2)', id, name);
    await pgln.notify('items', id, { executor: (text, values) => tx.$executeRawUnsafe(text, ...values) });
  });
}

// Kysely: a compiled raw query on the transaction
export const kyselyExecutor =
  (trx: Pick<ControlledTransaction<unknown>, 'executeQuery'>): PglnExecutor =>
  (text, values) =>
    trx.executeQuery(CompiledQuery.raw(text, values));

export async function addItemKysely(db: Kysely<unknown>, pgln: PglnService, id: string, name: string): Promise<void> {
  await db.transaction().execute(async (trx) => {
    await trx.executeQuery(CompiledQuery.raw('INSERT INTO items (id, name) VALUES ($1, $2)', [id, name]));
    await pgln.notify('items', id, { executor: kyselyExecutor(trx) });
  });
}

// MikroORM 7: its own em.execute() takes `?` placeholders and inlines arrays; use the transaction's Kysely connection
export async function addItemMikroOrm(orm: MikroORM, pgln: PglnService, id: string, name: string): Promise<void> {
  await orm.em.fork().transactional(async (em) => {
    await em.execute('INSERT INTO items (id, name) VALUES (?, ?)', [id, name]);
    await pgln.notify('items', id, { executor: kyselyExecutor(em.getTransactionContext()!) });
  });
}

// Drizzle runs sql objects, not text: this keeps the values bound parameters
export const drizzleExecutor =
  (tx: Pick<NodePgDatabase, 'execute'>): PglnExecutor =>
  (text, values) =>
    tx.execute(sql.join(text.split(/\$(\d+)/).map((part, i) => (i % 2 ? sql.param(values[Number(part) - 1]) : sql.raw(part)))));

export async function addItemDrizzle(db: NodePgDatabase, pgln: PglnService, id: string, name: string): Promise<void> {
  await db.transaction(async (tx) => {
    await tx.execute(sql`INSERT INTO ${sql.identifier('items')} (id, name) VALUES (${id}, ${name})`);
    await pgln.notify('items', id, { executor: drizzleExecutor(tx) });
  });
}
