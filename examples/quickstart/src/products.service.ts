import { Injectable } from '@nestjs/common';
import { PglnService } from 'nestjs-pgln';
import pg from 'pg';
import { Products, type Product } from './product.js';

@Injectable()
export class ProductsService {
  constructor(
    private readonly pool: pg.Pool,
    private readonly pgln: PglnService,
  ) {}

  /** Changes a price, and announces the change in the same transaction. */
  async setPrice(id: number, priceCents: number): Promise<Product | undefined> {
    const client = await this.pool.connect();
    try {
      // Writers notify inside their own transaction: delivered when it commits, never if it rolls back.
      await client.query('BEGIN');
      const { rows } = await client.query<Product>(
        'UPDATE products SET price_cents = $2 WHERE id = $1 RETURNING id, name, price_cents AS "priceCents"',
        [id, priceCents],
      );
      if (rows[0]) await this.pgln.notify(Products, { op: 'upsert', ...rows[0] }, { executor: client });
      await client.query('COMMIT');
      return rows[0];
    } catch (error) {
      await client.query('ROLLBACK');
      throw error;
    } finally {
      client.release();
    }
  }
}
