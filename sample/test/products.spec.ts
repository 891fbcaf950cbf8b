import { jest } from '@jest/globals';
import { Test } from '@nestjs/testing';
import { EventEmitter } from 'node:events';
import { Socket } from 'node:net';
import { PglnService } from 'nestjs-pgln';
import { PglnTestBus, PglnTestingModule } from 'nestjs-pgln/testing';
import { AppModule, pglnImport } from '../src/app.module.js';
import { DATABASE_POOL } from '../src/database/database.module.js';
import { ProductCache } from '../src/products/product-cache.service.js';
import type { Product } from '../src/products/product.js';
import { ProductsController } from '../src/products/products.controller.js';
import { Products } from '../src/products/product.js';

/**
 * The sample's providers, unit-tested with nestjs-pgln/testing: no database, no socket. The
 * products "table" is a Map behind a fake pool that answers the few statements they run.
 */

const connects = jest.spyOn(Socket.prototype, 'connect');
afterEach(() => expect(connects).not.toHaveBeenCalled());
afterAll(() => connects.mockRestore());

/** A fake `pg.Pool` over a Map: SELECT reads it, UPDATE ... RETURNING changes it. */
class FakePool extends EventEmitter {
  readonly table = new Map<number, Product>();
  private held?: { reading: () => void; released: Promise<void> };

  /** Holds the next SELECT after it read the table (as a snapshot): `reading` resolves then; `release()` lets it answer. */
  holdNextRead(): { reading: Promise<void>; release: () => void } {
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    const reading = new Promise<void>((resolve) => (this.held = { reading: resolve, released }));
    return { reading, release };
  }

  async query(text: string, values: unknown[] = []) {
    if (text.startsWith('SELECT id')) {
      const rows = [...this.table.values()].map((row) => ({ ...row }));
      const held = this.held;
      this.held = undefined;
      held?.reading();
      await held?.released;
      return { rows };
    }
    if (text.startsWith('UPDATE products')) {
      const [id, name, priceCents] = values as [number, string, number];
      const row = this.table.get(id);
      if (!row) return { rows: [], rowCount: 0 };
      const updated = { id, name, priceCents, version: row.version + 1 };
      this.table.set(id, updated);
      return { rows: [updated], rowCount: 1 };
    }
    return { rows: [], rowCount: 0 }; // BEGIN, COMMIT, and the notify (through this executor)
  }

  async connect() {
    return { query: this.query.bind(this), release: () => undefined };
  }

  async end(): Promise<void> {}
}

const espresso: Product = { id: 1, name: 'Espresso', priceCents: 250, version: 1 };

/** The whole application, its PglnModule replaced by the testing module and its pool by the fake. */
async function startApp() {
  const pool = new FakePool();
  pool.table.set(1, { ...espresso });
  const moduleRef = await Test.createTestingModule({ imports: [AppModule.forDatabase('postgres://nowhere.invalid/app')] })
    .overrideModule(pglnImport)
    .useModule(PglnTestingModule.forRoot())
    .overrideProvider(DATABASE_POOL)
    .useValue(pool)
    .compile();
  await moduleRef.init();
  return {
    moduleRef,
    pool,
    cache: moduleRef.get(ProductCache),
    bus: moduleRef.get(PglnTestBus),
    controller: moduleRef.get(ProductsController),
  };
}

describe('the sample, without a database', () => {
  let app: Awaited<ReturnType<typeof startApp>>;
  beforeEach(async () => {
    app = await startApp();
  });
  afterEach(() => app.moduleRef.close());

  it('ProductCache loads the table at init and applies changes, skipping one older than what it holds', async () => {
    expect(app.cache.all()).toEqual([espresso]);
    await app.bus.emit(Products, { op: 'upsert', ...espresso, priceCents: 270, version: 3 });
    await app.bus.emit(Products, { op: 'upsert', ...espresso, priceCents: 260, version: 2 }); // late: skipped
    expect(app.cache.get(1)?.priceCents).toBe(270);
    await app.bus.emit(Products, { op: 'delete', id: 1 });
    expect(app.cache.all()).toEqual([]);
  });

  it('after a reconnect the cache reloads, and a change committed during the reload is applied after it', async () => {
    app.pool.table.set(2, { id: 2, name: 'Lungo', priceCents: 300, version: 1 }); // added while disconnected, unheard
    const read = app.pool.holdNextRead();
    const reconnected = app.bus.reconnect();
    await read.reading; // the reload has read the table
    const lungo = { id: 2, name: 'Lungo', priceCents: 320, version: 2 };
    app.pool.table.set(2, lungo); // changed after that read: the reload did not see it
    const duringReload = app.bus.emit(Products, { op: 'upsert', ...lungo });
    read.release();
    await Promise.all([reconnected, duringReload]);
    expect(app.cache.all()).toEqual([...app.pool.table.values()]);
    expect(app.cache.get(2)?.priceCents).toBe(320);
  });

  it('PUT /products/:id notifies in the write\'s transaction, and the cache hears it', async () => {
    await app.controller.update(1, { name: 'Espresso', priceCents: 240 });
    expect(app.bus.sent).toEqual([
      { channel: 'products', payload: { op: 'upsert', id: 1, name: 'Espresso', priceCents: 240, version: 2 }, executor: true },
    ]);
    await app.bus.settled(Products);
    expect(app.cache.get(1)?.priceCents).toBe(240);
  });

  it('POST /products/resync reloads the cache', async () => {
    app.pool.table.set(1, { ...espresso, priceCents: 199, version: 2 }); // changed behind the app's back, never notified
    expect(await app.controller.resync()).toEqual({ products: 1 });
    expect(app.cache.get(1)?.priceCents).toBe(199);
    expect(app.moduleRef.get(PglnService).state).toBe('live');
  });
});
