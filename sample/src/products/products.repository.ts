import { Inject, Injectable } from '@nestjs/common';
import { PglnService } from 'nestjs-pgln';
import type pg from 'pg';
import { DATABASE_POOL } from '../database/database.module.js';
import { Products, type Product } from './product.js';

const COLUMNS = 'id, name, price_cents AS "priceCents", version';

/**
 * Writes to `products`. Each write changes the row and notifies in ONE transaction: the cache
 * hears of it when it commits, never if it rolls back, and never before the row is visible.
 */
@Injectable()
export class ProductsRepository {
  constructor(
    @Inject(DATABASE_POOL) private readonly pool: pg.Pool,
    private readonly pgln: PglnService,
  ) {}

  /** Every product, read from the table now (the cache serves the usual reads). */
  async all(): Promise<Product[]> {
    const { rows } = await this.pool.query<Product>(`SELECT ${COLUMNS} FROM products ORDER BY id`);
    return rows;
  }

  async create(name: string, priceCents: number): Promise<Product> {
    return this.transaction(async (client) => {
      const { rows } = await client.query<Product>(
        `INSERT INTO products (name, price_cents) VALUES ($1, $2) RETURNING ${COLUMNS}`,
        [name, priceCents],
      );
      await this.pgln.notify(Products, { op: 'upsert', ...rows[0]! }, { executor: client });
      return rows[0]!;
    });
  }

  /** The updated product, or undefined when there is no such product. */
  async update(id: number, name: string, priceCents: number): Promise<Product | undefined> {
    return this.transaction(async (client) => {
      const { rows } = await client.query<Product>(
        `UPDATE products SET name = $2, price_cents = $3 WHERE id = $1 RETURNING ${COLUMNS}`,
        [id, name, priceCents],
      );
      if (rows[0]) await this.pgln.notify(Products, { op: 'upsert', ...rows[0] }, { executor: client });
      return rows[0];
    });
  }

  /** Whether there was such a product. */
  async remove(id: number): Promise<boolean> {
    return this.transaction(async (client) => {
      const { rowCount } = await client.query('DELETE FROM products WHERE id = $1', [id]);
      if (rowCount) await this.pgln.notify(Products, { op: 'delete', id }, { executor: client });
      return !!rowCount;
    });
  }

  /**
   * Runs `work` in a transaction, committing unless it throws. The table's trigger stays silent
   * for it (`sample.app_notifies`): the app sends its own notification, typed and validated.
   */
  private async transaction<T>(work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    try {
      await client.query("BEGIN; SELECT set_config('sample.app_notifies', 'on', true)");
      const result = await work(client);
      await client.query('COMMIT');
      return result;
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw error;
    } finally {
      client.release();
    }
  }
}
