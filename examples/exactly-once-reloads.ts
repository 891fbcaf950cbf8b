/**
 * The README's "Exactly once": an exactly-once channel, and a reload that records its snapshot,
 * with each library. Each reads in one REPEATABLE READ transaction and calls
 * `event.snapshot(executor)` in it; test/exactly-once.spec.ts and test/orm.spec.ts run the same
 * transaction and snapshot lines on a real server.
 */
import { IsolationLevel, type MikroORM } from '@mikro-orm/postgresql';
import { Injectable } from '@nestjs/common';
import { sql } from 'drizzle-orm';
import type { NodePgDatabase } from 'drizzle-orm/node-postgres';
import { CompiledQuery, type Kysely } from 'kysely';
import { OnOutOfSync, defineChannel, type OutOfSyncEvent } from 'nestjs-pgln';
import pg from 'pg';
import type { DataSource } from 'typeorm';
import type { PrismaClient } from '../test/orm/prisma/generated/client.js';
import { drizzleExecutor, kyselyExecutor } from './orm-recipes.js';

export interface Order {
  id: number;
  total: number;
}

export type OrderChange = ({ op: 'upsert' } & Order) | { op: 'delete'; id: number };

export const Orders = defineChannel<OrderChange>('orders', { exactlyOnce: true });

@Injectable()
export class OrdersCache {
  private orders = new Map<number, Order>();

  constructor(private readonly pool: pg.Pool) {}

  @OnOutOfSync(Orders)
  async reload(event: OutOfSyncEvent): Promise<void> {
    // node-postgres
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
      await event.snapshot(client);
      const { rows } = await client.query<Order>('SELECT id, total FROM orders');
      await client.query('COMMIT');
      this.orders = new Map(rows.map((order) => [order.id, order]));
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined); // the module retries the reload: on a clean connection
      throw error;
    } finally {
      client.release();
    }
  }

  get(id: number): Order | undefined {
    return this.orders.get(id);
  }
}

// The same read with each library: one REPEATABLE READ transaction, its snapshot recorded first.

// TypeORM
export const readOrdersTypeOrm = (dataSource: DataSource, event: OutOfSyncEvent): Promise<Order[]> =>
  dataSource.transaction('REPEATABLE READ', async (manager) => {
    await event.snapshot(manager);
    return manager.query('SELECT id, total FROM orders');
  });

// Prisma 7: $queryRawUnsafe (snapshot() reads a row), in a RepeatableRead transaction
export const readOrdersPrisma = (prisma: PrismaClient, event: OutOfSyncEvent): Promise<Order[]> =>
  prisma.$transaction(async (tx) => {
    await event.snapshot((text, values) => tx.$queryRawUnsafe(text, ...values));
    return tx.$queryRawUnsafe<Order[]>('SELECT id, total FROM orders');
  }, { isolationLevel: 'RepeatableRead' });

// Drizzle
export const readOrdersDrizzle = (db: NodePgDatabase, event: OutOfSyncEvent): Promise<Order[]> =>
  db.transaction(async (tx) => {
    await event.snapshot(drizzleExecutor(tx));
    return (await tx.execute<{ id: number; total: number }>(sql`SELECT id, total FROM orders`)).rows;
  }, { isolationLevel: 'repeatable read' });

// Kysely
export const readOrdersKysely = (db: Kysely<unknown>, event: OutOfSyncEvent): Promise<Order[]> =>
  db.transaction().setIsolationLevel('repeatable read').execute(async (trx) => {
    await event.snapshot(kyselyExecutor(trx));
    return (await trx.executeQuery<Order>(CompiledQuery.raw('SELECT id, total FROM orders'))).rows;
  });

// MikroORM 7
export const readOrdersMikroOrm = (orm: MikroORM, event: OutOfSyncEvent): Promise<Order[]> =>
  orm.em.fork().transactional(async (em) => {
    await event.snapshot(kyselyExecutor(em.getTransactionContext()!));
    return em.execute<Order[]>('SELECT id, total FROM orders');
  }, { isolationLevel: IsolationLevel.REPEATABLE_READ });
