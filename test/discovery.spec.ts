import { Controller, Injectable, Scope } from '@nestjs/common';
import {
  OnNotification,
  OnOutOfSync,
  type OutOfSyncEvent,
  type PglnNotification,
} from '../lib/index.js';
import { createTestApp } from './support/app.js';
import { unique } from './support/database.js';
import { Inbox } from './support/wait.js';

describe('discovery of decorated handlers', () => {
  it('finds providers and controllers, binds this, and logs each registration once', async () => {
    const products = unique('products');
    const prices = unique('prices');
    const calls = new Inbox<string>();

    @Injectable()
    class ProductCache {
      private readonly label = 'cache';
      @OnOutOfSync(products)
      reload(event: OutOfSyncEvent) {
        calls.push(`${this.label}.reload:${event.reason}`);
      }
      // One method, two decorators: both registrations work.
      @OnNotification(products)
      @OnNotification(prices)
      apply(payload: string, notification: PglnNotification) {
        calls.push(`${this.label}.apply:${notification.channel === products ? 'products' : 'prices'}:${payload}`);
      }
    }

    @Controller()
    class AuditController {
      private readonly label = 'audit';
      @OnNotification(products)
      record(payload: string) {
        calls.push(`${this.label}.record:${payload}`);
      }
    }

    const t = await createTestApp({ providers: [ProductCache], controllers: [AuditController] });
    try {
      expect(calls.items).toEqual(['cache.reload:connect']);
      const registrations = t.logs.lines.filter((line) => line.context === 'PglnExplorer').map((line) => line.message);
      expect(registrations).toEqual([
        `ProductCache.reload {out-of-sync} -> ${products}`,
        `ProductCache.apply {notification} -> ${products}`,
        `ProductCache.apply {notification} -> ${prices}`,
        `AuditController.record {notification} -> ${products}`,
      ]);

      await t.pgln.notify(products, '1');
      await t.pgln.notify(prices, '2');
      // Handlers sharing a channel all run, in discovery order.
      expect(await calls.until(4)).toEqual([
        'cache.reload:connect',
        'cache.apply:products:1',
        'audit.record:1',
        'cache.apply:prices:2',
      ]);
    } finally {
      await t.app.close();
    }
  });

  it('warns, naming Class.method, about handlers on request-scoped and transient providers', async () => {
    const channel = unique('scoped');
    const calls: string[] = [];

    @Injectable({ scope: Scope.REQUEST })
    class PerRequest {
      @OnNotification(channel)
      handle() {
        calls.push('request');
      }
    }
    @Injectable({ scope: Scope.TRANSIENT })
    class PerInjection {
      @OnOutOfSync(channel)
      resync() {
        calls.push('transient');
      }
    }

    const t = await createTestApp({ providers: [PerRequest, PerInjection] });
    try {
      const warnings = t.logs.messages('warn');
      expect(warnings).toEqual(
        expect.arrayContaining([
          expect.stringMatching(/^PerRequest\.handle is decorated with @OnNotification but its provider is request-scoped or transient; it is NOT registered/),
          expect.stringMatching(/^PerInjection\.resync is decorated with @OnOutOfSync but its provider is request-scoped or transient; it is NOT registered/),
        ]),
      );
      await t.pgln.notify(channel, 'x');
      // A runtime listener on the same channel proves the notification was delivered, to nobody else.
      const inbox = new Inbox<string>();
      await t.pgln.listen(channel, { onNotification: inbox.push });
      await t.pgln.notify(channel, 'y');
      expect(await inbox.until(1)).toEqual(['y']);
      expect(calls).toEqual([]);
    } finally {
      await t.app.close();
    }
  });

  it('parses JSON for json: true, and skips an invalid payload with an error naming channel and handler', async () => {
    const channel = unique('json');
    const parsed = new Inbox<unknown>();

    @Injectable()
    class JsonReader {
      @OnNotification(channel, { json: true })
      read(payload: unknown) {
        parsed.push(payload);
      }
    }

    const t = await createTestApp({ providers: [JsonReader] });
    try {
      await t.pgln.notify(channel, { id: 1, tags: ['a'] });
      await t.pgln.notify(channel, 'not json {');
      await t.pgln.notify(channel, '42');
      expect(await parsed.until(2)).toEqual([{ id: 1, tags: ['a'] }, 42]);
      const errors = t.logs.messages('error');
      expect(errors).toHaveLength(1);
      expect(errors[0]).toContain(`Payload received on channel "${channel}" is not valid JSON`);
      expect(errors[0]).toContain('(skipped for JsonReader.read)');
      } finally {
      await t.app.close();
    }
  });
});
