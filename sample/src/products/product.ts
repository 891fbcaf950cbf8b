/** A product as the cache holds it. */
export interface Product {
  id: number;
  name: string;
  priceCents: number;
  version: number;
}

/** What the `products` trigger sends (see database/schema.ts). */
export type ProductChange = ({ op: 'upsert' } & Product) | { op: 'delete'; id: number };
