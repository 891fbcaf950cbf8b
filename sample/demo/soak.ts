/**
 * `npm run soak -- --minutes N [--seed S]`: the sample's ProductCache for N minutes (default 5)
 * under a steady writer, while faults hit its LISTEN connection at random intervals.
 *
 * - Writer: one update every 5–20 ms straight to the server (the table's trigger notifies), and
 *   every 2–5 s a burst of 10 concurrent updates through the app's own ProductsRepository (each
 *   notifies in its transaction).
 * - Faults, every 20–90 s, in random order, each kind once per round of five: the listener's
 *   backend killed, every proxied connection reset, a blackhole of 3–8 s (half-open: no error),
 *   connections refused for 3–15 s, and a server restart (down 1–3 s). After each, the soak waits
 *   for `PglnService.state$` to leave `live` and come back to it, for at most 60 s.
 * - Every minute, one line: heap used after a full GC, RSS, event-loop delay over the minute,
 *   open handles by type, connections on the server by application_name, faults and updates so
 *   far, and the zero-loss check: the writers pause, the cache must equal the table field by
 *   field within 5 s, and they resume.
 *
 * The fault schedule comes from a seeded PRNG (the seed is printed; `--seed` replays it); the
 * writers' timing does not. Exits 1 if a check failed or the listener did not come back, else 0.
 * Run by `npm run soak`, with `node --expose-gc`.
 */
import 'reflect-metadata';
import type { LoggerService } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { PglnService } from 'nestjs-pgln';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { TcpProxy } from '../../test/support/tcp-proxy.js';
import { startEmbeddedPostgres } from '../../tools/embedded-postgres.js';
import { createSchema } from '../src/database/schema.js';
import { ProductCache } from '../src/products/product-cache.service.js';
import { ProductsRepository } from '../src/products/products.repository.js';
import { DemoModule, Writer, print, seedProducts, settle, sleep, until, updateRandomProduct, runToExit } from './harness.js';

const PRODUCTS = 100;
const BURST = 10;
const APP = 'pgln-soak';
const CHECK_WITHIN_MS = 5000;
const BACK_WITHIN_MS = 60_000;
const LOOP_RESOLUTION_MS = 10;
const KINDS = ['kill', 'reset', 'blackhole', 'refuse', 'restart'] as const;
type Kind = (typeof KINDS)[number];

/** mulberry32: a small seeded PRNG, uniform in [0, 1). */
function prng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function options(): { minutes: number; seed: number } {
  const { values } = parseArgs({ options: { minutes: { type: 'string', default: '5' }, seed: { type: 'string' } } });
  const minutes = Number(values.minutes);
  const seed = values.seed === undefined ? Math.floor(Math.random() * 2 ** 32) : Number(values.seed);
  if (!(minutes > 0)) throw new Error(`--minutes must be a number > 0, got ${values.minutes}`);
  if (!Number.isInteger(seed) || seed < 0) throw new Error(`--seed must be a whole number >= 0, got ${values.seed}`);
  return { minutes, seed };
}

const mb = (bytes: number) => (bytes / 2 ** 20).toFixed(1);
const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
const duration = (ms: number) => (ms < 1000 ? `${ms} ms` : seconds(ms));
const tally = (names: Iterable<string>) => {
  const counts = new Map<string, number>();
  for (const name of names) counts.set(name, (counts.get(name) ?? 0) + 1);
  return [...counts].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
};

/** The last events (state$, warnings, errors, faults), to tell what happened when something fails. */
class Recent {
  private readonly lines: string[] = [];
  constructor(private readonly clock: () => string) {}

  add(line: string): void {
    this.lines.push(`${this.clock()}  ${line}`);
    if (this.lines.length > 40) this.lines.shift();
  }

  dump(): void {
    print('  the last events:');
    for (const line of this.lines) print(`    ${line}`);
  }
}

/** Keeps Nest's log off the screen: warnings and errors are counted by context and kept in {@link Recent}. */
class CountingLogger implements LoggerService {
  readonly counts = new Map<string, number>();
  constructor(private readonly recent: Recent) {}

  log(message: unknown, ...context: unknown[]): void {
    if (context.at(-1) === ProductCache.name) this.recent.add(`${ProductCache.name}: ${String(message)}`);
  }

  warn(message: unknown, ...context: unknown[]): void {
    this.count('warn', context, message);
  }

  error(message: unknown, ...context: unknown[]): void {
    this.count('error', context, message);
  }

  private count(level: string, context: unknown[], message: unknown): void {
    const key = `${level} ${String(context.at(-1) ?? '?')}`;
    this.counts.set(key, (this.counts.get(key) ?? 0) + 1);
    this.recent.add(`${key}: ${String(message)}`);
  }
}

async function main(): Promise<boolean> {
  const { minutes, seed } = options();
  const random = prng(seed);
  const between = (min: number, max: number) => min + random() * (max - min);
  const startedAt = Date.now();
  const clock = () => {
    const s = Math.floor((Date.now() - startedAt) / 1000);
    return `${String(Math.floor(s / 60)).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}`;
  };
  const recent = new Recent(clock);
  const logger = new CountingLogger(recent);
  if (!global.gc) print('warning: run node with --expose-gc; heap figures are without a full GC');

  const server = await startEmbeddedPostgres();
  const proxy = await TcpProxy.forUrl(server.url).start();
  const db = new pg.Pool({ connectionString: server.url, application_name: `${APP}-writer`, max: 3, connectionTimeoutMillis: 1000 });
  db.on('error', () => undefined); // idle connections die with the server; the pool replaces them
  let app: Awaited<ReturnType<typeof NestFactory.createApplicationContext>> | undefined;
  const writers: Writer[] = [];
  const pauseWriters = () => Promise.all(writers.map((writer) => writer.pause()));
  const cleanUp = async () => {
    await pauseWriters();
    await app?.close();
    await proxy.stop();
    await db.end();
    await server.destroy();
  };
  const watchdog = setTimeout(
    () => {
      print(`gave up: the soak did not finish within ${minutes + 5} minutes`);
      recent.dump();
      void cleanUp().finally(() => process.exit(1));
    },
    (minutes + 5) * 60_000,
  );

  try {
    await createSchema(server.url);
    await seedProducts(db, PRODUCTS);
    print(`soak: ${minutes} minutes, seed ${seed} (--seed ${seed} replays the faults, not the writers' timing)`);
    print(`PostgreSQL (embedded) on 127.0.0.1:${server.port}; the app's LISTEN connection goes through a TCP proxy on :${proxy.port}`);
    app = await NestFactory.createApplicationContext(
      DemoModule.through(`${server.url}?application_name=${APP}-app`, proxy, APP),
      { logger, abortOnError: false },
    );
    const pgln = app.get(PglnService);
    const cache = app.get(ProductCache);
    const repository = app.get(ProductsRepository);
    let departures = 0; // transitions out of 'live'
    const watching = pgln.state$.subscribe((change) => {
      if (change.previous === 'live' && change.state !== 'live') departures += 1;
      if (change.state !== change.previous) recent.add(`state$ ${change.previous} -> ${change.state}: ${change.detail}`);
    });
    let bursts = 0;
    const ids = () => {
      const picked = new Set<number>();
      while (picked.size < BURST) picked.add(1 + Math.floor(Math.random() * PRODUCTS));
      return [...picked];
    };
    writers.push(
      new Writer(() => [updateRandomProduct(db)], [5, 20]),
      new Writer(() => {
        bursts += 1;
        return ids().map((id) => repository.update(id, `Product ${id} (burst ${bursts})`, 100 + Math.floor(Math.random() * 10_000)));
      }, [2000, 5000]),
    );
    for (const writer of writers) writer.resume();
    print(
      `writer: ${PRODUCTS} products; one update every 5–20 ms straight to the server (the trigger notifies), ` +
        `and a burst of ${BURST} through the app's ProductsRepository every 2–5 s`,
    );
    print('faults: every 20–90 s, in random order, each kind once per round: kill, reset, blackhole, refuse, restart');
    print('every minute: heap (after a full GC), RSS, event-loop delay, handles, server connections, zero-loss check');
    print();

    const injections: Record<Kind, () => Promise<string>> = {
      kill: async () => {
        const { rows } = await db.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE application_name = $1', [`${APP}-listener`]);
        await db.query('SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid', [rows.map((row) => row.pid)]);
        return `pg_terminate_backend(${rows.map((row) => row.pid).join(', ')})`;
      },
      reset: async () => {
        proxy.resetAll();
        return 'every proxied connection reset';
      },
      blackhole: async () => {
        const lasting = between(3000, 8000);
        const from = Date.now();
        const before = departures;
        proxy.blackhole(true);
        const noticed = await until('the blackhole to be noticed', () => departures > before, lasting + 10_000).then(
          () => seconds(Date.now() - from),
          () => 'NOT noticed',
        );
        await sleep(from + lasting - Date.now());
        proxy.blackhole(false);
        return `blackholed for ${seconds(Date.now() - from)} (noticed after ${noticed})`;
      },
      refuse: async () => {
        const lasting = between(3000, 15_000);
        proxy.refuse(true);
        proxy.resetAll();
        await sleep(lasting);
        proxy.refuse(false);
        return `connections reset and refused for ${seconds(lasting)}`;
      },
      restart: async () => {
        const from = Date.now();
        await server.stop();
        await sleep(between(1000, 3000));
        await server.start();
        return `server down for ${seconds(Date.now() - from)}`;
      },
    };
    const faults: { kind: Kind; backMs: number }[] = [];
    let bag: Kind[] = [];
    let stranded = false;

    /** Injects the next fault of the bag and waits for the listener to go live again; false if it did not. */
    const fault = async (): Promise<boolean> => {
      if (bag.length === 0) bag = [...KINDS].map((kind) => ({ kind, key: random() })).sort((a, b) => a.key - b.key).map(({ kind }) => kind);
      const kind = bag.shift()!;
      const before = departures;
      recent.add(`fault ${faults.length + 1}: ${kind}`);
      const what = await injections[kind]();
      const ended = Date.now();
      const back = await until('live', () => departures > before && pgln.state === 'live', BACK_WITHIN_MS).then(
        () => true,
        () => false,
      );
      faults.push({ kind, backMs: Date.now() - ended });
      // The proxy keeps the server side of a blackholed connection open and unread, as a partition
      // does, with whatever the backend had sent in its buffers. Once the listener is back (it has
      // terminated that backend by then), the flow is torn down, as a keepalive timeout would in
      // the end: the soak measures the app's memory, not the fault injector's.
      if (kind === 'blackhole' && back) proxy.releaseOrphans();
      const outcome = back
        ? `live again ${duration(Date.now() - ended)} after it ended`
        : `NOT live again within ${BACK_WITHIN_MS / 1000} s: state ${pgln.state}`;
      print(`${clock()}  fault ${faults.length} ${kind}: ${what}; ${outcome}`);
      if (!back) recent.dump();
      return back;
    };

    const loop = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS });
    loop.enable();
    const samples: { heap: number; rss: number }[] = [];
    let checksFailed = 0;

    /** One line of figures, then the zero-loss check. */
    const report = async (): Promise<void> => {
      // The lateness of a 10 ms timer, in ms; the forced GC below is not measured.
      const delay = (ns: number) => Math.max(0, ns / 1e6 - LOOP_RESOLUTION_MS).toFixed(1);
      const loopFigures = `${delay(loop.percentile(50))}/${delay(loop.percentile(99))}/${delay(loop.max)}`;
      loop.disable();
      proxy.queries.length = 0; // the proxy's log of every statement sent through it, unused here: not the app's memory
      global.gc?.();
      loop.reset();
      loop.enable();
      const { heapUsed, rss } = process.memoryUsage();
      samples.push({ heap: heapUsed, rss });
      // Server sides of blackholed connections still held by the proxy (see TcpProxy.orphaned): the
      // proxy's sockets, not the app's.
      const resources = process.getActiveResourcesInfo();
      const orphans = proxy.orphaned;
      const handles = tally(resources)
        .map(([type, n]) => `${type.replace(/Wrap$/, '')} ${type === 'TCPSocketWrap' ? n - orphans : n}`)
        .join(', ');
      const { rows } = await db.query<{ name: string; n: number }>(
        `SELECT application_name AS name, count(*)::int AS n FROM pg_stat_activity
         WHERE datname = current_database() GROUP BY 1 ORDER BY 2 DESC, 1`,
      );
      const connections = rows.map(({ name, n }) => `${name.startsWith(`${APP}-`) ? name.slice(APP.length + 1) : name || '?'} ${n}`);
      const total = rows.reduce((sum, { n }) => sum + n, 0);
      await pauseWriters();
      const pausedAt = Date.now();
      const found = await settle(db, cache, CHECK_WITHIN_MS);
      const waited = Date.now() - pausedAt;
      const updates = writers.reduce((sum, writer) => sum + writer.committed, 0);
      const check =
        found.length === 0
          ? `yes (${cache.all().length} rows${waited > 100 ? `, equal ${waited} ms after the pause` : ''})`
          : `NO (${cache.all().length} rows, ${found.length} differ ${CHECK_WITHIN_MS} ms after the pause)`;
      print(
        `${clock()}  heap ${mb(heapUsed)} MB  rss ${mb(rss)} MB  loop p50/p99/max ${loopFigures} ms  ` +
          `handles ${resources.length - orphans} (${handles}) + ${orphans} kept by the proxy  server ${total} conns (${connections.join(', ')})  ` +
          `faults ${faults.length}  updates ${updates}  cache == table: ${check}`,
      );
      if (found.length > 0) {
        checksFailed += 1;
        for (const line of found.slice(0, 20)) print(`    ${line}`);
        recent.dump();
      }
      for (const writer of writers) writer.resume();
    };

    const endAt = startedAt + minutes * 60_000;
    let nextReport = Math.min(startedAt + 60_000, endAt);
    let nextFault = startedAt + between(20_000, 90_000);
    while (!stranded) {
      if (nextReport <= nextFault) {
        await sleep(nextReport - Date.now());
        await report();
        if (nextReport >= endAt) break;
        nextReport = Math.min(nextReport + 60_000, endAt);
      } else {
        await sleep(nextFault - Date.now());
        stranded = !(await fault());
        nextFault = Date.now() + between(20_000, 90_000);
      }
    }
    loop.disable();
    watching.unsubscribe();
    await pauseWriters();

    const stats = pgln.stats();
    const figures = (pick: (sample: { heap: number; rss: number }) => number) => {
      const values = samples.map(pick);
      return `first ${mb(values[0] ?? 0)}, last ${mb(values.at(-1) ?? 0)}, max ${mb(Math.max(...values))} MB`;
    };
    const byKind = KINDS.map((kind) => {
      const of = faults.filter((f) => f.kind === kind);
      return `${kind} ${of.length}${of.length ? ` (live again within ${duration(Math.max(...of.map((f) => f.backMs)))})` : ''}`;
    });
    const [steady, burst] = writers as [Writer, Writer];
    const ok = checksFailed === 0 && !stranded;
    print();
    print(`summary: ${((Date.now() - startedAt) / 60_000).toFixed(1)} minutes, seed ${seed}`);
    print(`  faults: ${faults.length}: ${byKind.join(', ')}`);
    print(`  listener back after every fault: ${stranded ? 'NO' : 'yes'}`);
    print(
      `  updates: ${steady.committed + burst.committed} committed (${steady.committed} straight, ${burst.committed} through the app ` +
        `in ${bursts} bursts), ${steady.failed + burst.failed} failed`,
    );
    print(`  zero-loss checks: ${samples.length - checksFailed}/${samples.length} passed`);
    print(`  heap used after GC: ${figures((s) => s.heap)}`);
    print(`  rss: ${figures((s) => s.rss)}`);
    const resyncs = Object.entries(stats.resyncs).filter(([, n]) => n > 0);
    print(
      `  module: ${stats.received} received, ${stats.delivered} delivered, ${stats.reconnects} reconnects, ` +
        `resyncs ${resyncs.map(([reason, n]) => `${reason} ${n}`).join(', ')}, ${stats.dropped} dropped, ${stats.handlerFailures} handler failures`,
    );
    const logged = [...logger.counts].sort((a, b) => b[1] - a[1]);
    print(`  logged: ${logged.map(([key, n]) => `${key} ${n}`).join(', ') || 'no warning, no error'}`);
    print(ok ? 'PASS: every check found the cache equal to the table, and the listener came back after every fault' : 'FAIL');
    return ok;
  } finally {
    clearTimeout(watchdog);
    await cleanUp();
  }
}

runToExit('soak', main);
