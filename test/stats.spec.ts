import { Injectable } from '@nestjs/common';
import { OnNotification, OnOutOfSync, type PglnStats } from '../lib/index.js';
import { createTestApp } from './support/app.js';
import { adminPool, terminate, unique } from './support/database.js';
import { Inbox, deferred, waitFor } from './support/wait.js';

const admin = adminPool();
afterAll(() => admin.end());

const events = unique('events');
const json = unique('json');
const busy = unique('busy');
const gate = { current: deferred() };

@Injectable()
class Handlers {
  readonly seen = new Inbox<string>();
  readonly busySeen = new Inbox<string>();
  @OnNotification(events)
  onEvent(payload: string) {
    if (payload === 'boom') throw new Error('boom');
    this.seen.push(payload);
  }
  @OnOutOfSync(events)
  reload() {}
  @OnNotification(json, { json: true })
  onJson(value: unknown) {
    this.seen.push(JSON.stringify(value));
  }
  @OnNotification(busy)
  async onBusy(payload: string) {
    this.busySeen.push(payload);
    await gate.current.promise;
  }
  @OnOutOfSync(busy)
  reloadBusy() {}
}

/** Sends `payloads` on `channel` in one transaction: they arrive together, in order. */
function send(channel: string, payloads: string[]) {
  return admin.query(`SELECT ${payloads.map((_, i) => `pg_notify($1, $${i + 2})`).join(', ')}`, [channel, ...payloads]);
}

const noResyncs = { connect: 0, reconnect: 0, listen: 0, overflow: 0, manual: 0 };

describe('PglnService.stats()', () => {
  it('counts what happens to notifications and resyncs, per channel and in total', async () => {
    const t = await createTestApp(
      { providers: [Handlers] },
      { maxQueuedNotifications: 3, healthCheck: { intervalMs: 50, timeoutMs: 1_000 } },
    );
    const handlers = t.get(Handlers);
    try {
      const initial = t.pgln.stats();
      expect(initial).toMatchObject({
        name: 'default',
        state: 'live',
        received: 0,
        delivered: 0,
        reconnects: 0,
        queued: 0,
        resyncs: { ...noResyncs, connect: 2 },
      });
      expect(initial.channels[events]).toEqual({
        received: 0,
        delivered: 0,
        handlerFailures: 0,
        invalidPayloads: 0,
        dropped: 0,
        skippedBySnapshot: 0,
        withoutTransactionId: 0,
        resyncs: { ...noResyncs, connect: 1 },
        // Handlers' reload and apply: one subscriber.
        subscriptions: 1,
        queued: 0,
        inSync: true,
        lastResync: { handler: 'Handlers.reload', reason: 'connect', at: expect.any(Date), durationMs: expect.any(Number) },
      });

      // Delivered, failed, rejected.
      await send(events, ['a', 'boom', 'b']);
      await send(json, ['{"ok":1}', 'not json']);
      await handlers.seen.until(3);
      await waitFor('the invalid payload to be counted', () => t.pgln.stats().invalidPayloads === 1);
      expect(t.pgln.stats().channels[events]).toMatchObject({ received: 3, delivered: 2, handlerFailures: 1 });
      expect(t.pgln.stats().channels[json]).toMatchObject({ received: 2, delivered: 1, invalidPayloads: 1 });

      // Waiting behind a busy handler, then dropped past maxQueuedNotifications (3), which resyncs.
      await send(busy, ['1', '2', '3', '4']);
      await waitFor('three notifications queued', () => t.pgln.stats().channels[busy]!.queued === 3);
      expect(t.pgln.stats().queued).toBe(3);
      await send(busy, ['5']);
      await waitFor('the overflow', () => t.pgln.stats().channels[busy]!.dropped === 4);
      gate.current.resolve();
      await waitFor('the overflow resync', () => t.pgln.stats().channels[busy]!.resyncs.overflow === 1);
      expect(t.pgln.stats().channels[busy]).toMatchObject({ received: 5, delivered: 1, queued: 0 });

      // A reconnect.
      await terminate(admin, `${t.appName}-listener`);
      await waitFor('the reconnect', () => t.pgln.stats().reconnects === 1 && t.pgln.state === 'live');
      const stats: PglnStats = t.pgln.stats();
      expect(stats.channels[events]!.resyncs).toEqual({ ...noResyncs, connect: 1, reconnect: 1 });
      expect(stats.channels[events]!.lastResync).toMatchObject({ reason: 'reconnect' });
      await waitFor('a health check', () => t.pgln.stats().lastHealthCheck);
      expect(t.pgln.stats()).toMatchObject({
        lastHealthCheck: { at: expect.any(Date), roundTripMs: expect.any(Number) },
        notificationQueueUsage: expect.any(Number),
      });

      // Totals add up the channels, and keep what channels no longer listened on counted.
      const before = t.pgln.stats();
      expect(before).toMatchObject({ received: 10, delivered: 4, handlerFailures: 1, invalidPayloads: 1, dropped: 4 });
      expect(before.resyncs).toEqual({ ...noResyncs, connect: 2, reconnect: 2, overflow: 1 });
      await t.pgln.unlisten(events);
      const after = t.pgln.stats();
      expect(after.channels[events]).toBeUndefined();
      expect(after).toMatchObject({ received: 10, delivered: 4, handlerFailures: 1, resyncs: before.resyncs });
    } finally {
      gate.current.resolve();
      await t.app.close();
    }
    expect(t.pgln.stats()).toMatchObject({ state: 'closed', received: 10, delivered: 4, channels: {} });
  });

  it('keeps counting handlers that finish after their channel is unlistened, and during close', async () => {
    const t = await createTestApp({}, { shutdownTimeoutMs: 5_000 });
    const channel = unique('leaving');
    const release = deferred();
    const started = new Inbox<string>();
    const off = await t.pgln.listen(channel, {
      onNotification: async (payload) => {
        started.push(payload);
        if (payload === 'last') await off(); // removes itself, then finishes
        await release.promise;
      },
    });
    await send(channel, ['last']);
    await started.until(1);
    await waitFor('the channel to be unlistened', () => !t.pgln.stats().channels[channel]);
    release.resolve();
    await waitFor('the handler to be counted', () => t.pgln.stats().delivered === 1);

    // A handler still running while the application closes.
    const slow = unique('closing');
    const finish = deferred();
    const running = new Inbox<string>();
    await t.pgln.listen(slow, {
      onNotification: async (payload) => {
        running.push(payload);
        await finish.promise;
      },
    });
    await send(slow, ['x']);
    await running.until(1);
    const closing = t.app.close();
    await waitFor('closing', () => t.pgln.state === 'closed');
    expect(t.pgln.stats()).toMatchObject({ received: 2, delivered: 1 }); // totals never go down
    finish.resolve();
    await closing;
    expect(t.pgln.stats()).toMatchObject({ received: 2, delivered: 2, channels: {} });
  });

  it('counts a listen() like a decorated handler, including what is held for it while its first sync runs', async () => {
    const t = await createTestApp();
    try {
      const channel = unique('runtime');
      const synced = deferred();
      const syncing = deferred();
      const seen = new Inbox<string>();
      const listening = t.pgln.listen(channel, {
        onOutOfSync: () => {
          syncing.resolve();
          return synced.promise;
        },
        onNotification: (payload) => seen.push(payload),
      });
      // Its out-of-sync handler runs once LISTEN has run (the channel shows in stats() before that).
      await syncing.promise;
      await send(channel, ['x', 'y']);
      await waitFor('two held', () => t.pgln.stats().channels[channel]!.queued === 2);
      synced.resolve();
      await listening;
      await seen.until(2);
      expect(t.pgln.stats().channels[channel]).toMatchObject({
        received: 2,
        delivered: 2,
        queued: 0,
        subscriptions: 1,
        resyncs: { ...noResyncs, listen: 1 },
        lastResync: { handler: `listen(${JSON.stringify(channel)})`, reason: 'listen' },
      });
    } finally {
      await t.app.close();
    }
  });
});
