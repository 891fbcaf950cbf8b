import { Injectable } from '@nestjs/common';
import { OnNotification, OnOutOfSync, PglnOverflowError, type OutOfSyncEvent } from '../lib/index.js';
import { buildTestApp, createTestApp } from './support/app.js';
import { adminPool, unique } from './support/database.js';
import { Inbox, deferred, waitFor } from './support/wait.js';

const admin = adminPool();
afterAll(() => admin.end());

/** A gate for handlers: the one handling payload '1' waits until released; the rest pass. */
function firstBlocks() {
  const release = deferred();
  const started = deferred();
  const gate = async (payload: string) => {
    if (payload !== '1') return;
    started.resolve();
    await release.promise;
  };
  return { gate, started, release };
}

/** Sends '2' to '21' in one transaction: they arrive together while '1' is being handled. */
const flood = (channel: string) =>
  admin.query('SELECT pg_notify($1, i::text) FROM generate_series(2, 21) AS i', [channel]);

describe('maxQueuedNotifications', () => {
  it('drops the queue of a subscriber that overflows and resyncs it (reason "overflow"); what arrived before that read began is not delivered after it', async () => {
    const channel = unique('overflow');
    const { gate, started, release } = firstBlocks();
    const events = new Inbox<string>();

    @Injectable()
    class Busy {
      @OnOutOfSync(channel)
      resync(event: OutOfSyncEvent) {
        events.push(`sync:${event.reason}`);
      }
      @OnNotification(channel)
      async receive(payload: string) {
        events.push(`n:${payload}`);
        await gate(payload);
      }
    }

    const t = await createTestApp({ providers: [Busy] }, { maxQueuedNotifications: 5 });
    try {
      await t.pgln.notify(channel, '1');
      await started.promise;
      await flood(channel);
      // 2..7 overflow the limit of 5; from then on a read is due, which will cover 8..21: none is queued or dropped.
      const overflowed = () => t.logs.messages('warn').filter((line) => line.includes('more than maxQueuedNotifications'));
      await waitFor('all of them to arrive', () => t.pgln.stats().received === 21);
      expect(overflowed()).toHaveLength(1);
      expect(t.pgln.stats()).toMatchObject({ dropped: 6, queued: 0 });
      expect(overflowed()[0]).toBe(
        `Channel "${channel}": 6 notifications were waiting for Busy.resync, Busy.receive, more than maxQueuedNotifications ` +
          "(5); dropped them and queued its out-of-sync handler (reason 'overflow') to cover them.",
      );
      release.resolve();
      await t.pgln.notify(channel, 'after');
      await events.until(4);
      // One resync covers what overflowed and what came after: all of it arrived before it began, so it
      // read them; delivered after it, they would take the state back to before the read.
      expect(events.items).toEqual(['sync:connect', 'n:1', 'sync:overflow', 'n:after']);
    } finally {
      release.resolve();
      await t.app.close();
    }
  });

  it('reports the number dropped on a channel without an out-of-sync handler, and keeps delivering', async () => {
    const channel = unique('overflow');
    const { gate, started, release } = firstBlocks();
    const received = new Inbox<string>();
    const errors = new Inbox<unknown>();
    const t = await createTestApp({}, { maxQueuedNotifications: 5 });
    try {
      await t.pgln.listen(channel, {
        onNotification: async (payload: string) => {
          received.push(payload);
          await gate(payload);
        },
        onError: errors.push,
      });
      await t.pgln.notify(channel, '1');
      await started.promise;
      await flood(channel);
      await errors.until(3);
      release.resolve();
      await t.pgln.notify(channel, 'after');
      expect(await received.until(4)).toEqual(['1', '20', '21', 'after']);
      for (const error of errors.items) {
        expect(error).toBeInstanceOf(PglnOverflowError);
        expect(error).toMatchObject({ channel, dropped: 6 });
      }
      expect(t.logs.messages('error')[0]).toBe(
        `Channel "${channel}": dropped 6 notifications, more than maxQueuedNotifications (5) were waiting for ` +
          `listen("${channel}"), which has no out-of-sync handler to recover with. ` +
          'Add an @OnOutOfSync handler (or onOutOfSync), or make handlers faster.',
      );
    } finally {
      release.resolve();
      await t.app.close();
    }
  });

  it('overflows one subscriber alone: the channel’s other subscribers keep receiving everything, in order', async () => {
    const channel = unique('overflow');
    const { gate, started, release } = firstBlocks();
    const reasons: string[] = [];
    const errors = new Inbox<unknown>();

    @Injectable()
    class Cache {
      @OnOutOfSync(channel)
      resync(event: OutOfSyncEvent) {
        reasons.push(event.reason);
      }
      @OnNotification(channel)
      receive(payload: string) {
        return gate(payload);
      }
    }

    const t = await createTestApp({ providers: [Cache] }, { maxQueuedNotifications: 5 });
    try {
      const received = new Inbox<string>();
      await t.pgln.listen(channel, { onNotification: received.push, onError: errors.push });
      await t.pgln.notify(channel, '1');
      await started.promise;
      await flood(channel);
      // Cache waits on '1' while the listener takes all of them.
      expect(await received.until(21)).toEqual(Array.from({ length: 21 }, (_, i) => String(i + 1)));
      // Cache waits on '1': 2..7 overflow its queue; its read, due from then on, covers the rest.
      await waitFor('Cache to overflow', () => t.pgln.stats().dropped === 6);
      release.resolve();
      await t.pgln.notify(channel, 'after');
      await received.until(22);
      await waitFor('Cache to resync', () => reasons.length === 2);
      expect(reasons).toEqual(['connect', 'overflow']);
      expect(errors.items).toEqual([]);
    } finally {
      release.resolve();
      await t.app.close();
    }
  });
});

describe('slowHandlerMs', () => {
  it('warns about a slow notification handler, naming it, its channel and the time; it is not cancelled', async () => {
    const channel = unique('slow');
    const release = deferred();
    const done = deferred();

    @Injectable()
    class Sluggish {
      @OnNotification(channel)
      async crunch() {
        await release.promise;
        done.resolve();
      }
    }

    const t = await createTestApp({ providers: [Sluggish] }, { slowHandlerMs: 50 });
    try {
      await t.pgln.notify(channel, 'x');
      const slow = new RegExp(
        `^Sluggish\\.crunch on channel "${channel}" has been running for \\d+ ms \\(slowHandlerMs: 50\\); it is not cancelled, and the channel waits for it\\.$`,
      );
      await waitFor('the slow-handler warning', () => t.logs.messages('warn').some((line) => slow.test(line)));
      release.resolve();
      await done.promise;
      await waitFor('the closing note', () =>
        t.logs.messages('warn').some((line) => new RegExp(`^Sluggish\\.crunch on channel "${channel}" finished after \\d+ ms\\.$`).test(line)),
      );
      expect(t.logs.messages('warn').filter((line) => slow.test(line))).toHaveLength(1);
    } finally {
      release.resolve();
      await t.app.close();
    }
  });

  it('warns, once it returns, about a synchronous handler that blocked the event loop', async () => {
    const channel = unique('slow');
    const done = new Inbox<string>();

    @Injectable()
    class Blocking {
      @OnNotification(channel)
      crunch(payload: string) {
        const until = Date.now() + 60;
        while (Date.now() < until); // a CPU-bound handler
        done.push(payload);
      }
    }

    const t = await createTestApp({ providers: [Blocking] }, { slowHandlerMs: 50 });
    try {
      await t.pgln.notify(channel, 'x');
      await done.until(1);
      expect(t.logs.messages('warn')).toEqual([
        expect.stringMatching(
          new RegExp(`^Blocking\\.crunch on channel "${channel}" ran synchronously for \\d+ ms \\(slowHandlerMs: 50\\), blocking the event loop all that time\\.$`),
        ),
      ]);
    } finally {
      await t.app.close();
    }
  });

  it('warns about a slow out-of-sync handler too', async () => {
    const channel = unique('slow');
    const release = deferred();

    @Injectable()
    class SlowReload {
      @OnOutOfSync(channel)
      async reload() {
        await release.promise;
      }
    }

    const built = await buildTestApp({ providers: [SlowReload] }, { slowHandlerMs: 50 });
    const init = built.app.init();
    await waitFor('the slow-handler warning', () =>
      built.logs.messages('warn').some((line) => line.startsWith(`SlowReload.reload on channel "${channel}" has been running for`)),
    );
    release.resolve();
    await init;
    await built.app.close();
  });
});
