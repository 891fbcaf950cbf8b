import type { INestApplication } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import pg from 'pg';
import { AppModule } from '../sample/src/app.module.js';
import { createSchema } from '../sample/src/database/schema.js';
import { adminPool, databaseUrl, terminate } from './support/database.js';
import { CapturingLogger } from './support/logs.js';
import { Inbox, waitFor } from './support/wait.js';

/** The sample app over HTTP: reads come from the cache, which LISTEN/NOTIFY keeps equal to the table. */
describe('sample app', () => {
  const admin = adminPool();
  let app: INestApplication;
  let base: string;

  // The JSON bodies are what the sample's controllers return; the assertions check their shape.
  const get = async (path: string): Promise<{ status: number; body: any }> => {
    const response = await fetch(`${base}${path}`);
    return { status: response.status, body: response.status === 200 ? await response.json() : undefined };
  };
  const send = (method: string, path: string, body?: unknown) =>
    fetch(`${base}${path}`, { method, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const table = async () =>
    (await admin.query('SELECT id, name, price_cents AS "priceCents", version FROM products ORDER BY id')).rows;

  beforeAll(async () => {
    await admin.query('DROP TABLE IF EXISTS products');
    await createSchema(databaseUrl());
    const moduleRef = await Test.createTestingModule({ imports: [AppModule.forDatabase(databaseUrl())] })
      .setLogger(new CapturingLogger())
      .compile();
    app = moduleRef.createNestApplication();
    await app.listen(0, '127.0.0.1');
    base = (await app.getUrl()).replace('[::1]', '127.0.0.1');
  });

  afterAll(async () => {
    await app?.close();
    await admin.query('DROP TABLE IF EXISTS products; DROP FUNCTION IF EXISTS products_changed()');
    await admin.end();
  });

  it('serves the table from a cache that was warm before the first request', async () => {
    const { status, body } = await get('/products');
    expect(status).toBe(200);
    expect(body.map((p: { name: string }) => p.name)).toEqual(['Espresso', 'Cappuccino', 'Croissant']);
    expect(await get('/health')).toMatchObject({
      status: 200,
      body: { status: 'ok', info: { listener: { status: 'up', state: 'live', queued: { products: 0 } } } },
    });
  });

  it('sees its own writes, and changes made by anyone else, through notifications', async () => {
    expect((await send('PUT', '/products/1', { name: 'Ristretto', priceCents: 240 })).status).toBe(204);
    await waitFor('the update in the cache', async () => (await get('/products/1')).body?.name === 'Ristretto');

    const created = (await (await send('POST', '/products', { name: 'Tea', priceCents: 200 })).json()) as { id: number };
    await waitFor('the new product in the cache', async () => (await get(`/products/${created.id}`)).status === 200);

    expect((await send('DELETE', '/products/3')).status).toBe(204);
    await waitFor('the deletion in the cache', async () => (await get('/products/3')).status === 404);

    await admin.query("UPDATE products SET price_cents = 999 WHERE name = 'Cappuccino'");
    await waitFor('an outside change in the cache', async () => (await get('/products/2')).body?.priceCents === 999);
    expect((await get('/products')).body).toEqual(await table());
  });

  it('announces each of its writes once, in the write’s own transaction, as a typed product change', async () => {
    const listener = new pg.Client({ connectionString: databaseUrl() });
    const heard = new Inbox<string>();
    listener.on('notification', (message) => heard.push(message.payload ?? ''));
    await listener.connect();
    try {
      await listener.query('LISTEN products');
      expect((await send('PUT', '/products/2', { name: 'Flat white', priceCents: 380 })).status).toBe(204);
      const [change] = await heard.until(1);
      expect(JSON.parse(change!)).toMatchObject({ op: 'upsert', id: 2, name: 'Flat white', priceCents: 380 });
      // Had the trigger spoken too, a second notification would arrive before this marker.
      await admin.query("SELECT pg_notify('products', 'marker')");
      expect(await heard.until(2)).toEqual([change, 'marker']);
    } finally {
      await listener.end();
    }
  });

  it('reloads the cache on POST /products/resync, repairing a change nobody announced', async () => {
    // A silent write, as a buggy batch job would make: the trigger is told the app notifies, and nobody does.
    const listener = new pg.Client({ connectionString: databaseUrl() });
    const heard = new Inbox<string>();
    listener.on('notification', (message) => heard.push(`${message.channel}:${message.payload}`));
    await listener.connect();
    try {
      await listener.query('LISTEN products; LISTEN silent_write_marker');
      await admin.query("BEGIN; SELECT set_config('sample.app_notifies', 'on', true); UPDATE products SET price_cents = 1 WHERE id = 1; COMMIT");
      // Notifications come in commit order: had the write been announced, it would come before this marker.
      await admin.query("SELECT pg_notify('silent_write_marker', 'after the write')");
      expect(await heard.until(1)).toEqual(['silent_write_marker:after the write']);
    } finally {
      await listener.end();
    }
    expect((await get('/products/1')).body.priceCents).not.toBe(1);
    const response = await send('POST', '/products/resync');
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ products: (await table()).length });
    expect((await get('/products')).body).toEqual(await table());
  });

  it('rejects bad input with 400 and keeps serving', async () => {
    const response = await send('POST', '/products', { name: 'Tea', priceCents: -1 });
    expect(response.status).toBe(400);
    expect(await response.json()).toMatchObject({ message: 'priceCents must be an integer >= 0' });
    expect((await get('/products')).status).toBe(200);
  });

  it('stays in sync across a killed LISTEN connection', async () => {
    expect(await terminate(admin, 'pgln-sample-listener')).toBe(1);
    await admin.query("UPDATE products SET name = 'Lungo' WHERE id = 1");
    await waitFor('the listener to be live again', async () => (await get('/health')).body?.info?.listener?.state === 'live');
    await waitFor('the cache to equal the table', async () =>
      JSON.stringify((await get('/products')).body) === JSON.stringify(await table()),
    );
    expect((await get('/products/1')).body.name).toBe('Lungo');
  });
});
