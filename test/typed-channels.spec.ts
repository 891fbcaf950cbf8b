import { Injectable } from '@nestjs/common';
import * as v from 'valibot';
import { z } from 'zod';
import {
  OnNotification,
  OnOutOfSync,
  PglnChannelError,
  PglnError,
  PglnPayloadError,
  PglnService,
  defineChannel,
  type OutOfSyncEvent,
  type PglnChannel,
  type PglnNotification,
} from '../lib/index.js';
import { createTestApp } from './support/app.js';
import { adminPool, unique } from './support/database.js';
import { Inbox, deferred } from './support/wait.js';

const admin = adminPool();
afterAll(() => admin.end());

interface ProductChange {
  id: number;
  price: number;
}

/** The same channel checked by two Standard Schema libraries. */
const SCHEMAS: [string, () => PglnChannel<ProductChange>][] = [
  ['zod 4', () => defineChannel(unique('products'), { schema: z.object({ id: z.number().int(), price: z.number().positive() }) })],
  ['valibot', () => defineChannel(unique('products'), { schema: v.object({ id: v.pipe(v.number(), v.integer()), price: v.pipe(v.number(), v.minValue(0.01)) }) })],
];

describe('a channel defined with a type only', () => {
  it('sends and delivers JSON, to decorated handlers and listen(), typed', async () => {
    const Products = defineChannel<ProductChange>(unique('products'));
    @Injectable()
    class Catalog {
      readonly changes = new Inbox<ProductChange>();
      readonly channels: string[] = [];
      readonly reasons: string[] = [];
      @OnNotification(Products)
      apply(change: ProductChange, notification: PglnNotification) {
        this.channels.push(notification.channel);
        this.changes.push(change);
      }
      @OnOutOfSync(Products)
      reload(event: OutOfSyncEvent) {
        this.reasons.push(event.reason);
      }
    }
    const t = await createTestApp({ providers: [Catalog] });
    try {
      const catalog = t.get(Catalog);
      const listened = new Inbox<ProductChange>();
      await t.pgln.listen(Products, { onNotification: (change) => listened.push(change) });
      await t.pgln.notify(Products, { id: 1, price: 9.5 });
      expect(await catalog.changes.until(1)).toEqual([{ id: 1, price: 9.5 }]);
      expect(catalog.channels).toEqual([Products.name]);
      expect(await listened.until(1)).toEqual([{ id: 1, price: 9.5 }]);
      expect(catalog.reasons).toEqual(['connect']);
      expect(t.logs.messages('log')).toContain(`Catalog.apply {notification, json} -> ${Products.name}`);
    } finally {
      await t.app.close();
    }
  });

  it('sends a string payload as JSON too, so the receiver parses what was sent', async () => {
    const Names = defineChannel<string>(unique('names'));
    const t = await createTestApp();
    try {
      const received = new Inbox<string>();
      await t.pgln.listen(Names, { onNotification: received.push });
      expect(t.pgln.notifyQuery(Names, 'ä "quoted"').values[1]).toBe('"ä \\"quoted\\""');
      await t.pgln.notify(Names, 'ä "quoted"');
      expect(await received.until(1)).toEqual(['ä "quoted"']);
    } finally {
      await t.app.close();
    }
  });
});

describe.each(SCHEMAS)('a channel defined with a %s schema', (_, define) => {
  it('rejects an invalid payload before sending, naming the issues', async () => {
    const Products = define();
    const t = await createTestApp();
    try {
      const failure = await t.pgln.notify(Products, { id: 1.5, price: -2 }).then(() => undefined, (error: Error) => error);
      expect(failure).toBeInstanceOf(PglnPayloadError);
      expect(failure?.message).toMatch(new RegExp(`^Payload for channel "${Products.name}" does not match the channel's schema: id: .+; price: .+`));
      expect(() => t.pgln.notifyQuery(Products, { id: 1, price: 0 })).toThrow(/price: /);
      // A payload the types would reject, as an untyped caller (JavaScript, JSON from a request) could send it.
      const untyped = { id: 'x' } as unknown as ProductChange;
      await expect(t.pgln.notifyMany([{ channel: Products, payload: untyped }])).rejects.toThrow(PglnPayloadError);
    } finally {
      await t.app.close();
    }
  });

  it('skips an invalid received payload, logging it with channel and handler and telling onError; delivery goes on', async () => {
    const Products = define();
    @Injectable()
    class Catalog {
      readonly changes = new Inbox<ProductChange>();
      @OnNotification(Products)
      apply(change: ProductChange) {
        this.changes.push(change);
      }
    }
    const t = await createTestApp({ providers: [Catalog] });
    try {
      const errors = new Inbox<Error>();
      const listened = new Inbox<ProductChange>();
      await t.pgln.listen(Products, { onNotification: listened.push, onError: errors.push });
      // Sent by something that bypasses the schema: a trigger, another service.
      await admin.query('SELECT pg_notify($1, $2), pg_notify($1, $3)', [Products.name, '{"id":"seven","price":1}', '{"id":7,"price":1}']);
      expect(await t.get(Catalog).changes.until(1)).toEqual([{ id: 7, price: 1 }]);
      expect(await listened.until(1)).toEqual([{ id: 7, price: 1 }]);
      const [error] = await errors.until(1);
      expect(error).toBeInstanceOf(PglnPayloadError);
      expect(error!.message).toMatch(new RegExp(`^Payload received on channel "${Products.name}" does not match the channel's schema: id: `));
      const logged = t.logs.messages('error');
      expect(logged).toHaveLength(2);
      expect(logged.some((line) => line.includes(`(skipped for Catalog.apply)`))).toBe(true);
      expect(logged.some((line) => line.includes(`(skipped for listen("${Products.name}"))`))).toBe(true);
    } finally {
      await t.app.close();
    }
  });
});

describe('a schema that validates asynchronously', () => {
  it('never calls a handler once off() resolved, even for a payload that was being validated then', async () => {
    const validating = deferred();
    const release = deferred();
    // A Standard Schema whose validation waits (a lookup, say) until the test releases it.
    const schema = {
      '~standard': {
        version: 1 as const,
        vendor: 'test',
        validate: async (value: unknown) => {
          validating.resolve();
          await release.promise;
          return { value: value as { id: number } };
        },
      },
    };
    const Orders = defineChannel(unique('async_off'), { schema });
    const t = await createTestApp();
    try {
      const calls: unknown[] = [];
      const off = await t.pgln.listen(Orders, { onNotification: (order) => void calls.push(order) });
      const other = new Inbox<unknown>();
      await t.pgln.listen(Orders, { onNotification: other.push });
      await admin.query('SELECT pg_notify($1, $2)', [Orders.name, JSON.stringify({ id: 1 })]);
      await validating.promise;
      await off();
      release.resolve();
      // A later notification reaches the other listener only after the first one's validations settled.
      await admin.query('SELECT pg_notify($1, $2)', [Orders.name, JSON.stringify({ id: 2 })]);
      expect(await other.until(2)).toEqual([{ id: 1 }, { id: 2 }]);
      expect(calls).toEqual([]);
    } finally {
      release.resolve();
      await t.app.close();
    }
  });

  const Orders = defineChannel(unique('orders'), { schema: z.object({ id: z.number() }).refine(async (order) => order.id > 0, 'id must be positive') });

  it('is awaited on both sides', async () => {
    const t = await createTestApp();
    try {
      const received = new Inbox<{ id: number }>();
      const errors = new Inbox<Error>();
      await t.pgln.listen(Orders, { onNotification: received.push, onError: errors.push });
      await expect(t.pgln.notify(Orders, { id: -1 })).rejects.toThrow(/id must be positive/);
      await admin.query('SELECT pg_notify($1, $2), pg_notify($1, $3)', [Orders.name, '{"id":-1}', '{"id":2}']);
      expect(await received.until(1)).toEqual([{ id: 2 }]);
      expect((await errors.until(1))[0]!.message).toMatch(/id must be positive/);
    } finally {
      await t.app.close();
    }
  });

  it('cannot be used by the synchronous query builders, which say so', async () => {
    const t = await createTestApp();
    try {
      expect(() => t.pgln.notifyQuery(Orders, { id: 1 })).toThrow(/validates asynchronously, so notifyQuery\(\)\/notifyManyQuery\(\) cannot/);
    } finally {
      await t.app.close();
    }
  });
});

describe('what a schema checks on send', () => {
  it('is the JSON that is sent, as receivers will parse it', async () => {
    // A Date passes z.date() as a value, but it is sent as a string: every receiver would reject it.
    const Events = defineChannel(unique('events'), { schema: z.object({ at: z.date() }) });
    const t = await createTestApp();
    try {
      await expect(t.pgln.notify(Events, { at: new Date() })).rejects.toThrow(
        new RegExp(`^Payload for channel "${Events.name}" does not match the channel's schema: at: .*date`, 'i'),
      );
    } finally {
      await t.app.close();
    }
  });

  it('in notifyMany, an asynchronous failure beside a synchronous one leaves no rejection unhandled', async () => {
    const Orders = defineChannel(unique('orders'), { schema: z.object({ id: z.number() }).refine(async () => false, 'never valid') });
    const t = await createTestApp();
    try {
      const invalid = { id: 1 };
      // The setup file fails the test if a rejection goes unhandled.
      await expect(t.pgln.notifyMany([{ channel: Orders, payload: invalid }, { channel: 'x'.repeat(64) }])).rejects.toBeInstanceOf(PglnChannelError);
      expect(() => t.pgln.notifyManyQuery([{ channel: Orders, payload: invalid }, { channel: '' }])).toThrow(PglnChannelError);
      await expect(t.pgln.notifyMany([{ channel: 'fine', payload: 'x' }, { channel: Orders, payload: invalid }])).rejects.toThrow(/never valid/);
    } finally {
      await t.app.close();
    }
  });
});

describe('defineChannel', () => {
  it('rejects a bad name or something that is not a Standard Schema', () => {
    expect(() => defineChannel('x'.repeat(64))).toThrow(PglnChannelError);
    expect(() => defineChannel('ok', { schema: { parse: () => 1 } as never })).toThrow(
      new PglnError(
        `defineChannel("ok"): schema must be a Standard Schema (an object with ['~standard'].validate, as zod 4, valibot and arktype schemas are).`,
      ),
    );
  });

  /**
   * Compile-time checks: `npm test` type-checks this file first, and an `@ts-expect-error` above
   * a line that compiles is itself an error. The function is never called.
   */
  it('makes wrong payloads and handler signatures fail to compile', () => {
    const Products = defineChannel(unique('products'), { schema: z.object({ id: z.number(), price: z.number() }) });
    const typeChecks = (pgln: PglnService) => {
      void pgln.notify(Products, { id: 1, price: 2 });
      // @ts-expect-error price must be a number
      void pgln.notify(Products, { id: 1, price: 'cheap' });
      // @ts-expect-error a payload is required
      void pgln.notify(Products);
      // @ts-expect-error the listener gets a ProductChange, not a string
      void pgln.listen(Products, { onNotification: (change: string) => change });
      void pgln.listen(Products, { onNotification: (change) => change.price.toFixed(2) });
      void pgln.notifyQuery(Products, { id: 1, price: 2 });
      // @ts-expect-error id is missing
      void pgln.notifyQuery(Products, { price: 2 });
      const partial = { id: 1 };
      // @ts-expect-error a variable is checked too, not taken as the payload type
      void pgln.notify(Products, partial);
      void pgln.notifyMany([{ channel: Products, payload: { id: 1, price: 2 } }, { channel: 'plain' }, { channel: 'plain', payload: 'text' }]);
      // @ts-expect-error each item's payload is checked against its own channel
      void pgln.notifyMany([{ channel: 'plain', payload: 'text' }, { channel: Products, payload: 'nonsense' }]);
      // @ts-expect-error a definition's payloads are always JSON: no json option
      void pgln.listen(Products, { json: false, onNotification: () => undefined });
      // A schema pinned to an existing interface.
      const Pinned = defineChannel<{ id: number; price: number }>(unique('pinned'), { schema: z.object({ id: z.number(), price: z.number() }) });
      void pgln.notify(Pinned, { id: 1, price: 2 });

      class Handlers {
        @OnNotification(Products)
        right(change: { id: number; price: number }, notification: PglnNotification) {
          return [change, notification];
        }
        @OnNotification(Products)
        fewer() {}
        // @ts-expect-error the handler expects a string, the channel carries products
        @OnNotification(Products)
        wrong(change: string) {
          return change;
        }
        @OnOutOfSync(Products)
        reload(event: OutOfSyncEvent) {
          return event;
        }
        // @ts-expect-error an out-of-sync handler gets an OutOfSyncEvent
        @OnOutOfSync(Products)
        badReload(event: number) {
          return event;
        }
      }
      return Handlers;
    };
    expect(typeof typeChecks).toBe('function');
  });
});
