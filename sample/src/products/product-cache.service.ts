import { Inject, Injectable, Logger } from '@nestjs/common';
import { OnNotification, OnOutOfSync, type OutOfSyncEvent } from 'nestjs-pgln';
import type pg from 'pg';
import { DATABASE_POOL } from '../database/database.module.js';
import { Products, type Product, type ProductChange } from './product.js';

/**
 * An in-memory copy of the `products` table, kept in sync by LISTEN/NOTIFY. Reads never touch
 * the database.
 */
@Injectable()
export class ProductCache {
  private readonly logger = new Logger(ProductCache.name);
  private products = new Map<number, Product>();

  constructor(@Inject(DATABASE_POOL) private readonly pool: pg.Pool) {}

  /**
   * Rebuilds the cache from the table: at startup (the app serves only after it), and after
   * every reconnect, when notifications may have been missed, and on demand (POST
   * /products/resync). Notifications that arrive while it runs are held and applied after it.
   */
  @OnOutOfSync(Products)
  async reload({ reason }: OutOfSyncEvent): Promise<void> {
    const { rows } = await this.pool.query<Product>(
      'SELECT id, name, price_cents AS "priceCents", version FROM products',
    );
    this.products = new Map(rows.map((product) => [product.id, product]));
    this.logger.log(`Reloaded ${rows.length} products (${reason})`);
  }

  /** Applies one change. A change may describe a state the reload already saw: the version check skips it. */
  @OnNotification(Products)
  apply(change: ProductChange): void {
    if (change.op === 'delete') {
      this.products.delete(change.id);
      return;
    }
    const { op: _, ...product } = change;
    const current = this.products.get(product.id);
    if (!current || current.version < product.version) this.products.set(product.id, product);
  }

  all(): Product[] {
    return [...this.products.values()].sort((a, b) => a.id - b.id);
  }

  get(id: number): Product | undefined {
    return this.products.get(id);
  }
}
