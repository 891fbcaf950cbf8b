import { defineChannel } from 'nestjs-pgln';

/** A row of the products table. */
export interface Product {
  id: number;
  name: string;
  priceCents: number;
}

/** One change: the whole row after an insert or update, or the id of a deleted row. */
export type ProductChange = ({ op: 'upsert' } & Product) | { op: 'delete'; id: number };

/** The channel, typed: `notify()` and the handlers agree on ProductChange. */
export const Products = defineChannel<ProductChange>('products');
