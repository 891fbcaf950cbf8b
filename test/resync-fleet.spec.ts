import { Injectable } from '@nestjs/common';
import { OnNotification, OnOutOfSync, type OutOfSyncEvent } from 'nestjs-pgln';
import { createTestApp, type TestApp } from './support/app.js';
import { adminPool, terminate, unique } from './support/database.js';
import { deferred, StateLog, waitFor } from './support/wait.js';

const admin = adminPool();
afterAll(() => admin.end());

/** Advisory locks held by the instances' resync slot connections (`<applicationName>-listener-resync`). */
async function slotsHeld(applicationName: string): Promise<number> {
  const { rows } = await admin.query<{ n: string }>(
    "SELECT count(*) AS n FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND a.application_name = $1",
    [`${applicationName}-listener-resync`],
  );
  return Number(rows[0]!.n);
}

/** Out-of-sync runs of every instance of a test: who runs now, and the most that ever ran at once. */
class Runs {
  readonly running = new Set<string>();
  most = 0;
  /** What a `'reconnect'` run waits for before it returns. */
  gate = deferred();

  enter(who: string): void {
    this.running.add(who);
    this.most = Math.max(this.most, this.running.size);
  }
}

/** A provider whose reload records itself in `runs` (waiting for `runs.gate` after a reconnect), and what its channel delivered. */
function cacheFor(channel: string, runs: Runs, who: string) {
  @Injectable()
  class Cache {
    readonly events: string[] = [];

    @OnOutOfSync(channel)
    async reload(event: OutOfSyncEvent): Promise<void> {
      runs.enter(who);
      try {
        if (event.reason === 'reconnect') await runs.gate.promise;
        this.events.push(event.reason);
      } finally {
        runs.running.delete(who);
      }
    }

    @OnNotification(channel)
    apply(payload: string): void {
      this.events.push(payload);
    }
  }
  return Cache;
}

describe('resync: { concurrency } across instances', () => {
  it('runs at most that many out-of-sync handlers at once across the fleet; the others wait, their notifications held', async () => {
    const channel = unique('fleet');
    const applicationName = unique('fleet');
    const runs = new Runs();
    const A = cacheFor(channel, runs, 'a');
    const B = cacheFor(channel, runs, 'b');
    const options = { applicationName, resync: { concurrency: 1 } };
    const apps: TestApp[] = [];
    try {
      apps.push(await createTestApp({ providers: [A] }, options));
      apps.push(await createTestApp({ providers: [B] }, options));
      const [a, b] = apps as [TestApp, TestApp];
      const states = [new StateLog(a.pgln), new StateLog(b.pgln)];
      // Both LISTEN backends at once, as a server restart would.
      expect(await terminate(admin, `${applicationName}-listener`)).toBe(2);
      await waitFor('one reload running and the other waiting for the slot', () =>
        runs.running.size === 1 && a.pgln.stats().waitingForResyncSlot + b.pgln.stats().waitingForResyncSlot === 1,
      );
      // The slot is a lock on a connection of its own (never the pool notify uses).
      expect(await slotsHeld(applicationName)).toBe(1);
      // Sent while one waits: held, and applied after its reload.
      await admin.query('SELECT pg_notify($1, $2)', [channel, 'during']);
      // (Two Nest apps in one process share Nest's static logger: lines cannot be told apart by app.)
      const waits = () => apps.flatMap((app) => app.logs.messages('log')).filter((line) => line.includes("wait for one of the fleet's 1 resync slot(s)"));
      await waitFor('the wait to be logged', () => waits().length > 0);
      runs.gate.resolve();
      await Promise.all(states.map((log) => log.reach('live', 2)));
      expect(waits().length).toBeLessThanOrEqual(2); // once per instance at most, however many times it asked
      expect(runs.most).toBe(1);
      for (const app of apps) {
        const cache = app.get(app === a ? A : B);
        expect(cache.events).toEqual(['connect', 'reconnect', 'during']);
      }
    } finally {
      runs.gate.resolve();
      for (const app of apps) await app.app.close();
    }
  });

  it('gives a slot up after holdMs when its handler hangs, so the rest of the fleet goes on', async () => {
    const channel = unique('fleet');
    const applicationName = unique('fleet');
    const runs = new Runs();
    const A = cacheFor(channel, runs, 'a');
    const B = cacheFor(channel, runs, 'b');
    const options = { applicationName, resync: { concurrency: 1, holdMs: 300 } };
    const apps: TestApp[] = [];
    try {
      apps.push(await createTestApp({ providers: [A] }, options));
      apps.push(await createTestApp({ providers: [B] }, options));
      const states = apps.map((app) => new StateLog(app.pgln));
      // The first reload to get the slot hangs (the gate stays shut): the other gets it once it is given up (and hangs too).
      expect(await terminate(admin, `${applicationName}-listener`)).toBe(2);
      await waitFor('both reloads running, the first slot given up', () => runs.running.size === 2);
      // By the instance after holdMs, or by the server (the slot connection idle for holdMs): either way logged.
      const given = apps.flatMap((app) => app.logs.messages('warn')).filter((line) => /Resync slot.* given up/.test(line));
      expect(given.length).toBeGreaterThanOrEqual(1);
      runs.gate.resolve();
      await Promise.all(states.map((log) => log.reach('live', 2)));
    } finally {
      runs.gate.resolve();
      for (const app of apps) await app.app.close();
    }
    // Closed, the instances hold no slot any more: their connections are gone, and with them the locks.
    await waitFor('no resync slot left', async () => (await slotsHeld(applicationName)) === 0);
  });

  it('refuses what it cannot honour', async () => {
    await expect(createTestApp({}, { resync: { concurrency: 0 } })).rejects.toThrow(
      'resync.concurrency must be a whole number from 1 to 1000 (out-of-sync runs at once across the fleet), got 0',
    );
    await expect(createTestApp({}, { resync: { jitterMs: -1 } })).rejects.toThrow('resync.jitterMs must be a number >= 0 (ms), got -1');
    await expect(createTestApp({}, { resync: { jitterMs: 1.5 } })).rejects.toThrow('resync.jitterMs must be a whole number of ms, got 1.5');
  });
});
