import { Injectable } from '@nestjs/common';
import { OnNotification, OnOutOfSync, type OutOfSyncEvent } from 'nestjs-pgln';
import { createHash } from 'node:crypto';
import pg from 'pg';
import { createTestApp, proxyForEachTest, throughProxy, type TestApp } from './support/app.js';
import { adminPool, databaseUrl, terminate, unique } from './support/database.js';
import type { TcpProxy } from './support/tcp-proxy.js';
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

/** The first advisory-lock key of the fleet's slots, as every instance named `applicationName` computes it. */
function slotKey(applicationName: string): number {
  return createHash('sha256').update(`pgln-resync:${applicationName}:default`).digest().readInt32BE(0);
}

/** The backend holding the fleet's slot (concurrency 1). */
async function slotHolder(applicationName: string): Promise<number> {
  const { rows } = await admin.query<{ pid: number }>("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid::int = $1", [
    slotKey(applicationName),
  ]);
  expect(rows).toHaveLength(1);
  return rows[0]!.pid;
}

/** Out-of-sync runs of every instance of a test: who runs now, and the most that ever ran at once. */
class Runs {
  readonly running = new Set<string>();
  most = 0;
  /** What a `'reconnect'` run waits for before it returns. */
  gate = deferred();
  /** What a `'manual'` run of each one waits for. */
  readonly manual = new Map<string, ReturnType<typeof deferred<void>>>();

  release(who: string): void {
    this.opening(who).resolve();
  }

  opening(who: string): ReturnType<typeof deferred<void>> {
    let opening = this.manual.get(who);
    if (!opening) this.manual.set(who, (opening = deferred()));
    return opening;
  }

  /** Every moment two or more ran at once: who. */
  readonly overlaps: string[][] = [];

  enter(who: string): void {
    this.running.add(who);
    this.most = Math.max(this.most, this.running.size);
    if (this.running.size > 1) this.overlaps.push([...this.running]);
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
        if (event.reason === 'manual') await runs.opening(who).promise;
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
      // Sent while one reloads and the other waits: held by both; applied after the running reload, and
      // covered by the waiting one's, which begins later (it reads the table after the commit).
      const [running] = runs.running;
      await admin.query('SELECT pg_notify($1, $2)', [channel, 'during']);
      // (Two Nest apps in one process share Nest's static logger: lines cannot be told apart by app.)
      const waits = () => apps.flatMap((app) => app.logs.messages('log')).filter((line) => line.includes("wait for one of the fleet's 1 resync slot(s)"));
      await waitFor('the wait to be logged', () => waits().length > 0);
      runs.gate.resolve();
      await Promise.all(states.map((log) => log.reach('live', 2)));
      expect(waits().length).toBeLessThanOrEqual(2); // once per instance at most, however many times it asked
      expect(runs.most).toBe(1);
      expect(a.get(A).events).toEqual(running === 'a' ? ['connect', 'reconnect', 'during'] : ['connect', 'reconnect']);
      expect(b.get(B).events).toEqual(running === 'b' ? ['connect', 'reconnect', 'during'] : ['connect', 'reconnect']);
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

describe('resync: a run and its slot', () => {
  it.each([
    ['given up after holdMs', { holdMs: 3_000 }],
    ['lost with its connection', {}],
  ])("a run whose slot was %s and went to another run does not release that run's slot when it ends", async (how, resync) => {
    const applicationName = unique('fleet');
    const [c1, c2, c3] = [unique('x1'), unique('x2'), unique('y3')];
    const runs = new Runs();
    const apps: TestApp[] = [];
    const options = { applicationName, resync: { concurrency: 1, ...resync } };
    try {
      apps.push(await createTestApp({ providers: [cacheFor(c1, runs, 'x1'), cacheFor(c2, runs, 'x2')] }, options));
      apps.push(await createTestApp({ providers: [cacheFor(c3, runs, 'y3')] }, options));
      const [x, y] = apps as [TestApp, TestApp];
      const first = x.pgln.resync(c1);
      await waitFor('x1 running', () => runs.running.has('x1'));
      const second = x.pgln.resync(c2);
      await waitFor('x2 waiting', () => x.pgln.stats().waitingForResyncSlot === 1);
      // The server releases x1's slot with its connection, or x gives it up after holdMs: x2 gets it.
      if (how === 'lost with its connection') await admin.query('SELECT pg_terminate_backend($1)', [await slotHolder(applicationName)]);
      await waitFor('x2 running with the slot', () => runs.running.has('x2'));
      runs.release('x1');
      await first;
      // Another instance asks while x2 runs: it waits for x2's slot, however x1's run ended.
      const third = y.pgln.resync(c3);
      await waitFor('y3 waiting', () => y.pgln.stats().waitingForResyncSlot === 1);
      runs.release('x2');
      await second;
      runs.release('y3');
      await third;
      // x1 ran beside x2 once its slot was given up (that is what holdMs and a lost connection mean); never x2 beside y3.
      expect(runs.most).toBe(2);
      expect(runs.overlaps.filter((names) => names.includes('y3'))).toEqual([]);
      expect(apps.flatMap((app) => app.logs.messages('warn')).filter((line) => line.includes('not held any more'))).toEqual([]);
    } finally {
      for (const who of ['x1', 'x2', 'y3']) runs.release(who);
      for (const app of apps) await app.app.close();
    }
  });

  it('notifications that arrive while it waits for a slot are covered by the read that follows: none is queued, none overflows, one read', async () => {
    const applicationName = unique('fleet');
    const channel = unique('held');
    const runs = new Runs();
    const Cache = cacheFor(channel, runs, 'a');
    const other = new pg.Client({ connectionString: databaseUrl() });
    await other.connect();
    let t: TestApp | undefined;
    try {
      t = await createTestApp({ providers: [Cache] }, { applicationName, maxQueuedNotifications: 5, resync: { concurrency: 1 } });
      const states = new StateLog(t.pgln);
      // Another member of the fleet holds the only slot.
      await other.query('SELECT pg_advisory_lock($1, 0)', [slotKey(applicationName)]);
      runs.release('a');
      const resynced = t.pgln.resync(channel);
      await waitFor('waiting for the slot', () => t!.pgln.stats().waitingForResyncSlot === 1);
      for (let i = 0; i < 10; i++) await admin.query('SELECT pg_notify($1, $2)', [channel, `n${i}`]);
      await waitFor('all ten received', () => t!.pgln.stats().received >= 10);
      expect(t.pgln.stats()).toMatchObject({ queued: 0, dropped: 0 });
      await other.query('SELECT pg_advisory_unlock($1, 0)', [slotKey(applicationName)]);
      await resynced;
      await states.reach('live', 2);
      expect(t.get(Cache).events).toEqual(['connect', 'manual']);
    } finally {
      await other.end();
      await t?.app.close();
    }
  });
});

describe('resync: slots that cannot be asked for', () => {
  let proxy: TcpProxy;
  proxyForEachTest((started) => (proxy = started));

  it('a run waits for them at most holdMs, logged once, then runs without one: the copy does not stay behind', async () => {
    const applicationName = unique('fleet');
    const channel = unique('unreachable');
    const runs = new Runs();
    const Cache = cacheFor(channel, runs, 'a');
    runs.release('a');
    const t = await createTestApp({ providers: [Cache] }, { applicationName, ...throughProxy(proxy), resync: { concurrency: 1, holdMs: 1_000 } });
    try {
      // New connections are refused (the server full, say) while the LISTEN connection goes on; the slot connection is gone.
      proxy.refuse(true);
      expect(await terminate(admin, `${applicationName}-listener-resync`)).toBe(1);
      await t.pgln.resync(channel);
      await admin.query('SELECT pg_notify($1, $2)', [channel, 'after']);
      await waitFor('a notification delivered after the read', () => t.get(Cache).events.includes('after'));
      expect(t.get(Cache).events).toEqual(['connect', 'manual', 'after']);
      expect(t.logs.messages('warn').filter((line) => line.startsWith('The resync slot connection failed'))).toHaveLength(1);
      expect(t.logs.messages('warn').filter((line) => line.includes('run without a resync slot: No resync slot could be asked for during resync.holdMs (1000 ms)'))).toHaveLength(1);
    } finally {
      proxy.refuse(false);
      await t.app.close();
    }
  });
});
