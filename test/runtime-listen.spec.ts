import { Injectable } from '@nestjs/common';
import { OnNotification, OnOutOfSync, PglnPayloadError, PglnService, type OutOfSyncEvent } from '../lib/index.js';
import { buildTestApp, createTestApp, throughProxy, type TestApp } from './support/app.js';
import { TcpProxy } from './support/tcp-proxy.js';
import { adminPool, databaseUrl, terminate, unique } from './support/database.js';
import { Inbox, StateLog, deferred, waitFor } from './support/wait.js';

const admin = adminPool();
afterAll(() => admin.end());

/**
 * Proves that nothing more will arrive on `channel`: sends `payload` on it and then a marker on
 * a sentinel channel in one transaction; once the marker is delivered, `payload` would have been too.
 */
async function settleAfter(t: TestApp, channel: string, payload: string): Promise<void> {
  const sentinel = unique('sentinel');
  const seen = new Inbox<string>();
  const off = await t.pgln.listen(sentinel, { onNotification: seen.push });
  await admin.query('SELECT pg_notify($1, $2), pg_notify($3, $4)', [channel, payload, sentinel, 'marker']);
  await seen.until(1);
  await off();
}

describe('PglnService.listen / unlisten at runtime', () => {
  let t: TestApp;
  beforeEach(async () => {
    t = await createTestApp();
  });
  afterEach(() => t.app.close());

  it('hears a channel with upper-case letters by its exact name, not as SQL folds an unquoted NOTIFY, and logs a hint once', async () => {
    const channel = `Orders_${unique('case')}`;
    const received = new Inbox<string>();
    await t.pgln.listen(channel, { onNotification: received.push });
    await t.pgln.listen(channel, { onNotification: () => undefined }); // the same channel again: no second hint
    const off = await t.pgln.listen(`${channel}_2`, { onNotification: () => undefined });
    await off(); // its last subscription gone, the channel goes: listened on again, still no second hint
    await t.pgln.listen(`${channel}_2`, { onNotification: () => undefined });
    await admin.query(`NOTIFY ${channel}, 'unquoted'`); // folded to lower case: another channel
    await admin.query(`NOTIFY "${channel}", 'quoted'`);
    // In commit order: had the first been heard, it would have come first.
    expect(await received.until(1)).toEqual(['quoted']);
    const hints = t.logs.messages('log').filter((line) => line.includes('has upper-case letters'));
    expect(hints).toEqual([
      `Channel "${channel}" has upper-case letters. Channel names are case-sensitive, and SQL folds unquoted names to ` +
        `lower case: NOTIFY ${channel} (or LISTEN) in SQL means "${channel.toLowerCase()}", which this channel does not ` +
        `hear; quote it (NOTIFY "${channel}") or use pg_notify('${channel}', ...).`,
      expect.stringContaining(`Channel "${channel}_2" has upper-case letters.`),
    ]);
  });

  it('resolves after LISTEN ran and onOutOfSync completed with reason "listen"', async () => {
    const channel = unique('runtime');
    const events: string[] = [];
    const received = new Inbox<string>();
    const off = await t.pgln.listen(channel, {
      onOutOfSync: async (event: OutOfSyncEvent) => {
        await admin.query('SELECT 1');
        events.push(`sync:${event.channel === channel}:${event.reason}`);
      },
      onNotification: received.push,
    });
    expect(events).toEqual(['sync:true:listen']);
    // Sent right after listen() resolved, so LISTEN must already be active.
    await t.pgln.notify(channel, 'first');
    expect(await received.until(1)).toEqual(['first']);
    await off();
  });

  it('runs onOutOfSync with reason "reconnect" after a reconnect', async () => {
    const channel = unique('runtime');
    const reasons = new Inbox<string>();
    await t.pgln.listen(channel, { onOutOfSync: (event: OutOfSyncEvent) => reasons.push(event.reason) });
    await terminate(admin, `${t.appName}-listener`);
    expect(await reasons.until(2)).toEqual(['listen', 'reconnect']);
  });

  it('passes parsed JSON with json: true', async () => {
    const channel = unique('runtime');
    const received = new Inbox<unknown>();
    await t.pgln.listen<{ id: number }>(channel, { json: true, onNotification: received.push });
    await t.pgln.notify(channel, { id: 7 });
    expect(await received.until(1)).toEqual([{ id: 7 }]);
  });

  it('stops delivery once the returned function resolves, keeping other listeners of the channel', async () => {
    const channel = unique('runtime');
    const first = new Inbox<string>();
    const second = new Inbox<string>();
    const offFirst = await t.pgln.listen(channel, { onNotification: first.push });
    const offSecond = await t.pgln.listen(channel, { onNotification: second.push });
    await t.pgln.notify(channel, 'both');
    await first.until(1);
    await second.until(1);

    await offFirst();
    await t.pgln.notify(channel, 'second only');
    await second.until(2);
    await offSecond();
    await settleAfter(t, channel, 'nobody');
    expect(first.items).toEqual(['both']);
    expect(second.items).toEqual(['both', 'second only']);
  });

  it('calls no handler once unlisten resolves; a handler may remove itself while others keep receiving', async () => {
    const channel = unique('runtime');
    const once: string[] = [];
    const others = new Inbox<string>();
    const off = await t.pgln.listen(channel, {
      onNotification: async (payload: string) => {
        once.push(payload);
        await off(); // awaiting its own removal must not stall the channel
      },
    });
    await t.pgln.listen(channel, { onNotification: others.push });
    await admin.query("SELECT pg_notify($1, '1'), pg_notify($1, '2'), pg_notify($1, '3')", [channel]);
    expect(await others.until(3)).toEqual(['1', '2', '3']);
    expect(once).toEqual(['1']);
  });

  it('delivers to a channel listened on again after its last listener left', async () => {
    const channel = unique('again');
    const first = new Inbox<string>();
    const off = await t.pgln.listen(channel, { onNotification: first.push });
    await t.pgln.notify(channel, 'first');
    await first.until(1);
    await off();
    const second = new Inbox<string>();
    await t.pgln.listen(channel, { onNotification: second.push });
    await t.pgln.notify(channel, 'second');
    expect(await second.until(1)).toEqual(['second']);
    expect(first.items).toEqual(['first']);
  });

  it('delivers nothing queued before a new listener of a busy channel synced: its resync covers it', async () => {
    const channel = unique('runtime');
    const release = deferred();
    const started = new Inbox<string>();
    await t.pgln.listen(channel, {
      onNotification: async (payload: string) => {
        started.push(payload);
        await release.promise;
      },
    });
    await admin.query("SELECT pg_notify($1, '1'), pg_notify($1, '2'), pg_notify($1, '3')", [channel]);
    await started.until(1);
    // '2' and '3' are queued behind the blocked handler when the second listener arrives.
    const events = new Inbox<string>();
    const second = t.pgln.listen(channel, {
      onOutOfSync: (event: OutOfSyncEvent) => void events.push(`sync:${event.reason}`),
      onNotification: (payload: string) => void events.push(`n:${payload}`),
    });
    release.resolve();
    await second;
    await t.pgln.notify(channel, '4');
    expect(await events.until(2)).toEqual(['sync:listen', 'n:4']);
  });

  it('lets a synchronous handler start another listener on its own channel', async () => {
    const channel = unique('runtime');
    const second = new Inbox<string>();
    let listening: Promise<unknown> | undefined;
    await t.pgln.listen(channel, {
      onNotification: () => {
        // Synchronous: the new listener's resync is queued while this handler runs.
        listening ??= t.pgln.listen(channel, {
          onOutOfSync: (event: OutOfSyncEvent) => void second.push(`sync:${event.reason}`),
          onNotification: second.push,
        });
      },
    });
    await t.pgln.notify(channel, 'first');
    await waitFor('the handler to start a listener', () => listening);
    await listening;
    await t.pgln.notify(channel, 'second');
    expect(await second.until(2)).toEqual(['sync:listen', 'second']);
  });

  it('rejects a listen() still waiting for its first sync when its channel is unlistened', async () => {
    const channel = unique('runtime');
    const release = deferred();
    const pending = t.pgln.listen(channel, { onOutOfSync: () => release.promise });
    const rejected = expect(pending).rejects.toThrow(/Stopped listening on ".*" before this listener was in sync/);
    await t.pgln.unlisten(channel);
    release.resolve();
    await rejected;
  });

  it('rejects a call without handlers, and a bad channel name, with clear errors', async () => {
    await expect(t.pgln.listen(unique('runtime'), {})).rejects.toThrow(/needs an onNotification or an onOutOfSync function/);
    await expect(t.pgln.listen('x'.repeat(64), { onNotification: () => undefined })).rejects.toThrow(/64 bytes/);
  });
});

describe('PglnService.listen: handlers, and waits that must not wait on themselves', () => {
  let t: TestApp;
  beforeEach(async () => {
    // No reconnect happens in these tests: long delays make a retry wait that is not cut short visible.
    t = await createTestApp({}, { reconnect: { initialDelayMs: 60_000, maxDelayMs: 60_000 }, maxQueuedNotifications: 2 });
  });
  afterEach(() => t.app.close());

  it('calls the handlers as methods of the object given, so they may use `this`', async () => {
    const channel = unique('methods');
    class CacheListener {
      readonly reasons: string[] = [];
      readonly payloads = new Inbox<unknown>();
      readonly errors = new Inbox<Error>();
      json = true;
      onOutOfSync(event: OutOfSyncEvent) {
        this.reasons.push(event.reason);
      }
      onNotification(payload: unknown) {
        this.payloads.push(payload);
      }
      onError(error: Error) {
        this.errors.push(error);
      }
    }
    const cache = new CacheListener();
    await t.pgln.listen(channel, cache);
    expect(cache.reasons).toEqual(['listen']);
    await t.pgln.notify(channel, 'not json {');
    await t.pgln.notify(channel, { id: 1 });
    expect(await cache.payloads.until(1)).toEqual([{ id: 1 }]);
    // A payload that is not JSON is a payload error (as documented), not a handler failure.
    const [error] = await cache.errors.until(1);
    expect(error).toBeInstanceOf(PglnPayloadError);
    expect(error!.message).toMatch(/is not valid JSON: /);
  });

  it('lets a handler await listen() on its own channel: the new listener syncs beside the one waiting for it', async () => {
    const channel = unique('self_listen');
    const inner = new Inbox<string>();
    const outer = new Inbox<string>();
    await t.pgln.listen(channel, {
      onNotification: async (payload: string) => {
        if (payload === 'start') {
          await t.pgln.listen(channel, {
            onOutOfSync: (event: OutOfSyncEvent) => void inner.push(`sync:${event.reason}`),
            onNotification: (innerPayload: string) => void inner.push(innerPayload),
          });
          inner.push('listen() resolved');
        }
        outer.push(payload);
      },
    });
    await t.pgln.notify(channel, 'start');
    expect(await inner.until(2)).toEqual(['sync:listen', 'listen() resolved']);
    await t.pgln.notify(channel, 'after');
    expect(await inner.until(3)).toEqual(['sync:listen', 'listen() resolved', 'after']);
    expect(await outer.until(2)).toEqual(['start', 'after']);
  });

  it('holds only itself while its resync waits to be retried, and once removed is never called again', async () => {
    const channel = unique('off_while_retrying');
    const gate = deferred();
    const flowing = new Inbox<string>();
    const failures = new Inbox<Error>();
    const stuck: string[] = [];
    await t.pgln.listen(channel, { onNotification: flowing.push });
    const off = await t.pgln.listen(channel, {
      onNotification: async (payload: string) => {
        stuck.push(payload);
        if (payload === '1') await gate.promise;
      },
      onOutOfSync: (event: OutOfSyncEvent) => {
        if (event.reason === 'overflow') throw new Error('the table is locked');
      },
      onError: failures.push,
    });
    // '1' blocks this listener; '2', '3', '4' overflow its queue (limit 2): an 'overflow' resync is due.
    await admin.query("SELECT pg_notify($1, '1'), pg_notify($1, '2'), pg_notify($1, '3'), pg_notify($1, '4')", [channel]);
    await waitFor('the overflow', () => t.logs.messages('warn').some((line) => line.includes('maxQueuedNotifications')));
    // The other listener of the channel is not held by it.
    expect(await flowing.until(4)).toEqual(['1', '2', '3', '4']);
    gate.resolve();
    await failures.until(1); // failed once; its retry waits up to a minute
    await off();
    await t.pgln.notify(channel, 'after');
    await flowing.until(5);
    expect(flowing.items).toEqual(['1', '2', '3', '4', 'after']);
    expect(stuck).toEqual(['1']);
  });
});

describe('PglnService.listen before bootstrap', () => {
  it('can be awaited in onModuleInit: it connects on demand instead of waiting for bootstrap', async () => {
    const early = unique('early');
    const late = unique('late');
    const events: string[] = [];

    @Injectable()
    class EarlyListener {
      constructor(private readonly pgln: PglnService) {}
      async onModuleInit() {
        await this.pgln.listen(early, { onOutOfSync: (event: OutOfSyncEvent) => void events.push(`early:${event.reason}`) });
        events.push('onModuleInit done');
      }
      @OnOutOfSync(late)
      resync(event: OutOfSyncEvent) {
        events.push(`late:${event.reason}`);
      }
    }

    const t = await createTestApp({ providers: [EarlyListener] });
    try {
      expect(events).toEqual(['early:listen', 'onModuleInit done', 'late:connect']);
      expect(t.pgln.state).toBe('live');
    } finally {
      await t.app.close();
    }
  });
});

describe('decorated handlers when a listen() in onModuleInit has connected already', () => {
  it('hold a provider’s notifications until its out-of-sync handler at bootstrap has finished', async () => {
    const channel = unique('cache');
    const sentinel = unique('sentinel');
    const reading = deferred();
    const gate = deferred();
    const arrived = deferred();

    @Injectable()
    class EarlyListener {
      constructor(private readonly pgln: PglnService) {}
      async onModuleInit() {
        await this.pgln.listen(sentinel, { onNotification: () => arrived.resolve() });
      }
    }

    @Injectable()
    class Cache {
      value = 'none';
      readonly log: string[] = [];
      @OnOutOfSync(channel)
      async reload() {
        const snapshot = 'v1'; // what the table held when it was read
        this.log.push('reload read v1');
        reading.resolve();
        await gate.promise;
        this.value = snapshot;
        this.log.push('reload done');
      }
      @OnNotification(channel)
      apply(payload: string) {
        this.value = payload;
        this.log.push(`apply ${payload}`);
      }
    }

    const built = await buildTestApp({ providers: [EarlyListener, Cache] });
    try {
      const init = built.app.init();
      await reading.promise;
      // A change committed while reload runs; the sentinel, sent after it, proves it reached the listener.
      await admin.query('SELECT pg_notify($1, $2), pg_notify($3, $4)', [channel, 'v2', sentinel, 'x']);
      await arrived.promise;
      gate.resolve();
      await init;
      const cache = built.get(Cache);
      await waitFor('v2 to be applied', () => cache.log.includes('apply v2'));
      expect(cache.log).toEqual(['reload read v1', 'reload done', 'apply v2']);
      expect(cache.value).toBe('v2');
    } finally {
      await built.app.close();
    }
  });
});

describe('PglnService.unlisten', () => {
  it('removes decorated handlers too, and the channel is not LISTENed again after a reconnect', async () => {
    const dropped = unique('decorated');
    const kept = unique('kept');
    const received = new Inbox<string>();

    @Injectable()
    class Decorated {
      @OnNotification(dropped)
      receive(payload: string) {
        received.push(payload);
      }
      @OnNotification(kept)
      keep() {}
    }

    const proxy = await TcpProxy.forUrl(databaseUrl()).start();
    const t = await createTestApp({ providers: [Decorated] }, throughProxy(proxy));
    try {
      await t.pgln.notify(dropped, 'before');
      await received.until(1);
      await t.pgln.unlisten(dropped);
      expect(proxy.queries.at(-1)).toBe(`UNLISTEN "${dropped}"`);
      await settleAfter(t, dropped, 'after');
      expect(received.items).toEqual(['before']);

      const states = new StateLog(t.pgln);
      const sent = proxy.queries.length;
      await terminate(admin, `${t.appName}-listener`);
      await states.reach('live', 2);
      expect(proxy.queries.slice(sent).filter((sql) => sql.startsWith('LISTEN'))).toEqual([`LISTEN "${kept}"`]);
    } finally {
      await t.app.close();
      await proxy.stop();
    }
  });
});
