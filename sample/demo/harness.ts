/**
 * What `npm run demo` and `npm run soak` share: the sample's pieces assembled with the LISTEN
 * connection behind a fault-injecting TCP proxy, a writer that can pause, and the field-by-field
 * comparison of the ProductCache with the `products` table.
 */
import { Module, type DynamicModule } from '@nestjs/common';
import { PglnModule } from 'nestjs-pgln';
import type pg from 'pg';
import type { TcpProxy } from '../../test/support/tcp-proxy.js';
import { DATABASE_POOL, DatabaseModule } from '../src/database/database.module.js';
import type { Product } from '../src/products/product.js';
import type { ProductCache } from '../src/products/product-cache.service.js';
import { ProductsModule } from '../src/products/products.module.js';

/** How long the cache may take to catch up with the table once the writer has paused. */
export const SETTLE_MS = 3000;

export const print = (line = '') => void process.stdout.write(`${line}\n`);
export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolves once `condition` holds; throws naming `what` after `timeoutMs`. */
export async function until(what: string, condition: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  for (const deadline = Date.now() + timeoutMs; !(await condition()); await sleep(10)) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
  }
}

/** The sample's pieces, with the LISTEN connection sent through the proxy and a health check every second. */
@Module({})
export class DemoModule {
  /**
   * @param databaseUrl for the app's pool (and the listener's credentials)
   * @param applicationName of the module's connections; the listener's is `<applicationName>-listener`
   */
  static through(databaseUrl: string, proxy: TcpProxy, applicationName = 'pgln-demo'): DynamicModule {
    return {
      module: DemoModule,
      imports: [
        DatabaseModule.forRoot(databaseUrl),
        PglnModule.forRootAsync({
          inject: [DATABASE_POOL],
          useFactory: (pool: pg.Pool) => ({
            pool,
            applicationName,
            listener: { host: '127.0.0.1', port: proxy.port },
            // A silent connection is noticed within intervalMs + timeoutMs = 2 s.
            healthCheck: { intervalMs: 1000, timeoutMs: 1000 },
          }),
        }),
        ProductsModule,
      ],
    };
  }
}

/** Tops the `products` table up to `count` rows. */
export async function seedProducts(db: pg.Pool, count: number): Promise<void> {
  await db.query(
    `INSERT INTO products (name, price_cents) SELECT 'Product ' || i, 100 + i
     FROM generate_series((SELECT count(*) FROM products) + 1, $1) AS i`,
    [count],
  );
}

/** Bumps the price of a random product, straight to the server: the table's trigger notifies. */
export function updateRandomProduct(db: pg.Pool): Promise<unknown> {
  const random = 'SELECT id FROM products ORDER BY random() LIMIT 1';
  return db.query(`UPDATE products SET price_cents = price_cents + 1 WHERE id = (${random})`);
}

/**
 * Runs `step` again and again, `delayMs` (a random time between the two bounds) apart, until
 * paused. Each step starts one or more updates; each is counted as committed or failed, and a
 * failure never stops the loop.
 */
export class Writer {
  committed = 0;
  failed = 0;
  private running?: Promise<void>;
  private stopping = false;
  /** Ends the wait between two steps early. */
  private wake?: () => void;

  constructor(
    private readonly step: () => Promise<unknown>[],
    private readonly delayMs: readonly [min: number, max: number],
  ) {}

  resume(): void {
    this.stopping = false;
    this.running ??= this.loop().finally(() => (this.running = undefined));
  }

  /** Resolves once the updates in flight, if any, have committed or failed. */
  async pause(): Promise<void> {
    this.stopping = true;
    this.wake?.();
    await this.running;
  }

  private async loop(): Promise<void> {
    const [min, max] = this.delayMs;
    while (!this.stopping) {
      for (const outcome of await Promise.allSettled(this.step())) {
        if (outcome.status === 'fulfilled') this.committed += 1;
        else this.failed += 1;
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, min + Math.random() * (max - min));
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }
}

/** Rows where the cache and the table differ, field by field, in words; empty when they are equal. */
export async function differences(db: pg.Pool, cache: ProductCache): Promise<string[]> {
  const { rows } = await db.query<Product>('SELECT id, name, price_cents AS "priceCents", version FROM products ORDER BY id');
  const cached = new Map(cache.all().map((product) => [product.id, product]));
  const found: string[] = [];
  for (const row of rows) {
    const held = cached.get(row.id);
    cached.delete(row.id);
    if (!held) {
      found.push(`#${row.id} missing from the cache (table: ${JSON.stringify(row)})`);
      continue;
    }
    const fields = (['name', 'priceCents', 'version'] as const).filter((field) => held[field] !== row[field]);
    if (fields.length) found.push(`#${row.id} ${fields.map((field) => `${field}: cache ${held[field]}, table ${row[field]}`).join('; ')}`);
  }
  for (const extra of cached.values()) found.push(`#${extra.id} in the cache, not in the table`);
  return found;
}

/** Compares until the cache equals the table or `withinMs` have passed; the last differences found. */
export async function settle(db: pg.Pool, cache: ProductCache, withinMs = SETTLE_MS): Promise<string[]> {
  for (const deadline = Date.now() + withinMs; ; await sleep(20)) {
    const found = await differences(db, cache);
    if (found.length === 0 || Date.now() > deadline) return found;
  }
}

/** Runs a tool's `main` and exits: 0 when it resolves true, 1 when false or when it fails (printed under `name`). */
export function runToExit(name: string, main: () => Promise<boolean>): void {
  main().then(
    (ok) => process.exit(ok ? 0 : 1),
    (error: unknown) => {
      print(`${name} failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
      process.exit(1);
    },
  );
}
