import { Injectable } from '@nestjs/common';
import { OnNotification, type PglnNotification } from '../lib/index.js';
import { createTestApp, type TestApp } from './support/app.js';
import { adminPool, unique } from './support/database.js';
import { Inbox, deferred } from './support/wait.js';

const admin = adminPool();
afterAll(() => admin.end());

describe('channel names are quoted, never interpolated', () => {
  const suffix = unique('q').slice(1);
  const table = unique('victim');
  const names = {
    mixedCase: `OrderEvents${suffix}`,
    spaces: `order events ${suffix}`,
    quotes: `it's "quoted" ${suffix}`,
    injection: `"; DROP TABLE ${table}; --${suffix}`.slice(0, 63),
    unicode: `통지-${suffix}`,
    longest: `${'n'.repeat(63 - suffix.length)}${suffix}`,
  };
  const received = new Inbox<[string, string]>();

  @Injectable()
  class Names {
    @OnNotification(names.mixedCase)
    @OnNotification(names.spaces)
    @OnNotification(names.quotes)
    @OnNotification(names.injection)
    @OnNotification(names.unicode)
    @OnNotification(names.longest)
    receive(payload: string, notification: PglnNotification) {
      received.push([notification.channel, payload]);
    }
  }

  let t: TestApp;
  beforeAll(async () => {
    await admin.query(`CREATE TABLE ${table} (id int)`);
    t = await createTestApp({ providers: [Names] });
  });
  afterAll(async () => {
    await t.app.close();
    await admin.query(`DROP TABLE IF EXISTS ${table}`);
  });

  it('delivers each name exactly as sent, and injects nothing', async () => {
    expect(Buffer.byteLength(names.longest)).toBe(63);
    for (const name of Object.values(names)) await t.pgln.notify(name, name);
    // Case matters: PostgreSQL does not fold pg_notify's channel, and LISTEN was quoted.
    await t.pgln.notify(names.mixedCase.toLowerCase(), 'folded');
    await t.pgln.notify(names.mixedCase, 'last');
    const all = await received.until(7);
    expect(all).toEqual([...Object.values(names).map((name) => [name, name]), [names.mixedCase, 'last']]);
    const { rows } = await admin.query('SELECT to_regclass($1) AS still_there', [table]);
    expect(rows[0].still_there).toBe(table);
  });
});

describe('ordered, isolated delivery', () => {
  it('delivers in order, one at a time, awaiting async handlers', async () => {
    const channel = unique('ordered');
    const seen = new Inbox<number>();
    let running = 0;
    let maxRunning = 0;

    @Injectable()
    class Slow {
      @OnNotification(channel, { json: true })
      async handle(payload: { n: number }) {
        running += 1;
        maxRunning = Math.max(maxRunning, running);
        // Yield to the event loop a varying number of times, so later items could overtake.
        for (let i = 0; i < payload.n % 5; i++) await new Promise((resolve) => setImmediate(resolve));
        seen.push(payload.n);
        running -= 1;
      }
    }

    const t = await createTestApp({ providers: [Slow] });
    try {
      const count = 300;
      // One transaction: PostgreSQL delivers them together at commit.
      await admin.query(
        "SELECT pg_notify($1, json_build_object('n', i)::text) FROM generate_series(1, $2) AS i",
        [channel, count],
      );
      const numbers = await seen.until(count);
      expect(numbers).toEqual(Array.from({ length: count }, (_, i) => i + 1));
      expect(maxRunning).toBe(1);
    } finally {
      await t.app.close();
    }
  });

  it('lets other channels flow while a handler on one channel is slow', async () => {
    const blocked = unique('blocked');
    const flowing = unique('flowing');
    const release = deferred();
    const started = deferred();
    const events = new Inbox<string>();

    @Injectable()
    class Two {
      @OnNotification(blocked)
      async block(payload: string) {
        events.push(`blocked:${payload}:start`);
        started.resolve();
        await release.promise;
        events.push(`blocked:${payload}:end`);
      }
      @OnNotification(flowing)
      flow(payload: string) {
        events.push(`flowing:${payload}`);
      }
    }

    const t = await createTestApp({ providers: [Two] });
    try {
      await t.pgln.notify(blocked, '1');
      await started.promise;
      await t.pgln.notify(blocked, '2');
      await t.pgln.notify(flowing, 'a');
      await t.pgln.notify(flowing, 'b');
      await events.until(3);
      expect(events.items).toEqual(['blocked:1:start', 'flowing:a', 'flowing:b']);
      release.resolve();
      expect((await events.until(6)).slice(3)).toEqual(['blocked:1:end', 'blocked:2:start', 'blocked:2:end']);
    } finally {
      release.resolve();
      await t.app.close();
    }
  });
});

describe('handler failures', () => {
  it('logs channel, Class.method and stack, and keeps delivering', async () => {
    const channel = unique('failing');
    const delivered = new Inbox<string>();

    @Injectable()
    class Fragile {
      @OnNotification(channel)
      syncThrow(payload: string) {
        if (payload === 'bad-sync') throw new Error('sync boom');
      }
      @OnNotification(channel)
      async asyncReject(payload: string) {
        await Promise.resolve();
        if (payload === 'bad-async') throw new Error('async boom');
        delivered.push(payload);
      }
    }

    const t = await createTestApp({ providers: [Fragile] });
    try {
      for (const payload of ['bad-sync', 'bad-async', 'good']) await t.pgln.notify(channel, payload);
      // 'bad-sync' still reaches the second handler; 'bad-async' fails there.
      expect(await delivered.until(2)).toEqual(['bad-sync', 'good']);
      const errors = t.logs.messages('error');
      expect(errors).toHaveLength(2);
      expect(errors[0]).toContain(`Fragile.syncThrow failed on channel "${channel}": Error: sync boom`);
      expect(errors[0]).toMatch(/at Fragile\.syncThrow/);
      expect(errors[1]).toContain(`Fragile.asyncReject failed on channel "${channel}": Error: async boom`);
      expect(t.pgln.state).toBe('live');
    } finally {
      await t.app.close();
    }
  });

  it("tells a runtime listener's onError, with the channel and the cause", async () => {
    const t = await createTestApp();
    const channel = unique('onerror');
    const errors = new Inbox<Error & { channel?: string; cause?: unknown }>();
    const delivered = new Inbox<string>();
    try {
      await t.pgln.listen(channel, {
        onNotification: (payload: string) => {
          if (payload === 'bad') throw new TypeError('nope');
          delivered.push(payload);
        },
        onError: errors.push,
      });
      await t.pgln.notify(channel, 'bad');
      await t.pgln.notify(channel, 'fine');
      expect(await delivered.until(1)).toEqual(['fine']);
      const [error] = await errors.until(1);
      expect(error!.name).toBe('PglnHandlerError');
      expect(error!.channel).toBe(channel);
      expect(error!.cause).toBeInstanceOf(TypeError);
    } finally {
      await t.app.close();
    }
  });
});
