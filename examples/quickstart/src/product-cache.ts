import { Injectable } from '@nestjs/common';
import { OnNotification, OnOutOfSync } from 'nestjs-pgln';
import pg from 'pg';
import { Products, type Product, type ProductChange } from './product.js';

/** The products table in memory, kept equal to it by LISTEN/NOTIFY: reads never touch the database. */
@Injectable()
export class ProductCache {
  private products = new Map<number, Product>();

  constructor(private readonly pool: pg.Pool) {}

  @OnOutOfSync(Products) // at startup (app.init() waits for it) and after every reconnect
  async reload(): Promise<void> {
    const { rows } = await this.pool.query<Product>('SELECT id, name, price_cents AS "priceCents" FROM products');
    this.products = new Map(rows.map((product) => [product.id, product]));
  }

  @OnNotification(Products) // one change at a time, in commit order, after any reload
  apply(change: ProductChange): void {
    if (change.op === 'delete') {
      this.products.delete(change.id);
    } else {
      const { op: _, ...product } = change;
      this.products.set(product.id, product);
    }
  }

  get(id: number): Product | undefined {
    return this.products.get(id);
  }
}
