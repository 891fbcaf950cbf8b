import { defineChannel } from 'nestjs-pgln';

/** A product as the cache holds it. */
export interface Product {
  id: number;
  name: string;
  priceCents: number;
  version: number;
}

/** One change of the `products` table: the whole row after it, or the id of a deleted one. */
export type ProductChange = ({ op: 'upsert' } & Product) | { op: 'delete'; id: number };

/**
 * The `products` channel: JSON payloads typed as {@link ProductChange}, sent by the repository in
 * the transaction of each write, and by the table's trigger for changes made outside the app.
 */
export const Products = defineChannel<ProductChange>('products');
