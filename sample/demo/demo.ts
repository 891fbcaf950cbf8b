/**
 * `npm run demo`: see it heal. The sample's ProductCache runs against an embedded PostgreSQL while a
 * writer, on a connection of its own, changes random products every 20–50 ms (the table's trigger
 * notifies). Three faults hit the LISTEN connection in turn: its backend is killed, its network
 * goes silent (a blackhole: a half-open connection that reports no error), and the server
 * restarts. For each, the demo prints what the module did, from `PglnService.state$` and the
 * ProductCache's log, then pauses the writer and compares the cache with the table, row by row.
 * Exits 0 when the cache matched the table after every fault, 1 otherwise.
 *
 * Only the LISTEN connection goes through an in-process TCP proxy (the `listener` option), so
 * that its network can fail while the app's pool and the writer reach the server directly.
 */
import 'reflect-metadata';
import { type LoggerService } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { PglnService, type PglnStateChange } from 'nestjs-pgln';
import pg from 'pg';
import { TcpProxy } from '../../test/support/tcp-proxy.js';
import { startEmbeddedPostgres } from '../../tools/embedded-postgres.js';
import { createSchema } from '../src/database/schema.js';
import { ProductCache } from '../src/products/product-cache.service.js';
import { DemoModule, SETTLE_MS, Writer, print, seedProducts, settle, sleep, until, updateRandomProduct, runToExit } from './harness.js';

const PRODUCTS = 20;
const GIVE_UP_AFTER_MS = 60_000;

const updates = (count: number) => `${count} update${count === 1 ? '' : 's'}`;

/** The story of the current fault: lines stamped with the time since the fault was injected. */
class Timeline {
  private start = Date.now();

  restart(): void {
    this.start = Date.now();
  }

  get elapsed(): number {
    return Date.now() - this.start;
  }

  note(who: string, what: string): void {
    print(`  ${`+${this.elapsed} ms`.padStart(9)}  ${who.padEnd(12)}  ${what}`);
  }
}

/**
 * Nest's log, kept off the screen except what the story needs: the cache's reloads and every
 * warning or error, under their logger's context (the listener's "-> reconnecting" warning is
 * left out: state$ tells it).
 */
class StoryLogger implements LoggerService {
  constructor(private readonly timeline: Timeline) {}

  log(message: unknown, ...context: unknown[]): void {
    if (context.at(-1) === ProductCache.name) this.timeline.note(ProductCache.name, String(message));
  }

  warn(message: unknown, ...context: unknown[]): void {
    if (!/ -> reconnecting: /.test(String(message))) this.timeline.note(String(context.at(-1) ?? 'warn'), String(message));
  }

  error(message: unknown, ...context: unknown[]): void {
    this.timeline.note(String(context.at(-1) ?? 'error'), `ERROR ${String(message)}`);
  }
}

async function main(): Promise<boolean> {
  const server = await startEmbeddedPostgres();
  const proxy = await TcpProxy.forUrl(server.url).start();
  const db = new pg.Pool({ connectionString: server.url, application_name: 'pgln-demo-writer', max: 2, connectionTimeoutMillis: 1000 });
  db.on('error', () => undefined); // idle connections die with the server; the pool replaces them
  const timeline = new Timeline();
  // Changes a random product every 20–50 ms, on a pool of its own; failed updates are counted and the next one tried.
  const writer = new Writer(() => [updateRandomProduct(db)], [20, 50]);
  let app: Awaited<ReturnType<typeof NestFactory.createApplicationContext>> | undefined;
  const cleanUp = async () => {
    await writer.pause();
    await app?.close();
    await proxy.stop();
    await db.end();
    await server.destroy();
  };
  const watchdog = setTimeout(() => {
    print(`gave up: the demo did not finish within ${GIVE_UP_AFTER_MS / 1000} s`);
    void cleanUp().finally(() => process.exit(1));
  }, GIVE_UP_AFTER_MS);

  try {
    await createSchema(server.url);
    await seedProducts(db, PRODUCTS);
    print(`PostgreSQL (embedded) on 127.0.0.1:${server.port}; the app's LISTEN connection goes through a TCP proxy on :${proxy.port}`);
    print('startup');
    app = await NestFactory.createApplicationContext(DemoModule.through(server.url, proxy), {
      logger: new StoryLogger(timeline),
      abortOnError: false,
    });
    const pgln = app.get(PglnService);
    const cache = app.get(ProductCache);
    const states: PglnStateChange[] = [];
    const watching = pgln.state$.subscribe((change) => {
      states.push(change);
      if (change.state !== change.previous) timeline.note('state$', `${change.previous} -> ${change.state}: ${change.detail}`);
    });
    writer.resume();
    print(`writer: updating one of ${PRODUCTS} products every 20–50 ms, straight to the server (the trigger notifies)`);

    const faults: { name: string; inject: () => Promise<void> }[] = [
      {
        name: "kill the LISTEN connection's backend (pg_terminate_backend)",
        inject: async () => {
          const { rows } = await db.query<{ pid: number }>(
            "SELECT pid FROM pg_stat_activity WHERE application_name LIKE '%-listener'",
          );
          timeline.note('demo', `pg_terminate_backend(${rows.map((row) => row.pid).join(', ')})`);
          await db.query('SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid', [rows.map((row) => row.pid)]);
        },
      },
      {
        name: 'blackhole the LISTEN connection (half-open: no error, no data)',
        inject: async () => {
          timeline.note('demo', 'proxy blackholed');
          proxy.blackhole(true);
          const from = states.length;
          await until('the health check to notice', () => states.slice(from).some((change) => change.state === 'reconnecting'));
          // Attempts to reconnect meanwhile are swallowed too, until the network comes back.
          await sleep(1500);
          proxy.blackhole(false);
          timeline.note('demo', 'proxy forwards again (blackhole lifted)');
        },
      },
      {
        name: 'restart PostgreSQL',
        inject: async () => {
          const failedBefore = writer.failed;
          timeline.note('demo', 'stopping the server');
          await server.stop();
          timeline.note('demo', 'server stopped');
          await sleep(1000);
          await server.start();
          timeline.note('demo', `server started again (the writer had ${updates(writer.failed - failedBefore)} fail meanwhile)`);
        },
      },
    ];

    let healed = 0;
    for (const [index, fault] of faults.entries()) {
      await sleep(1000); // notifications flowing live before the fault
      print();
      print(`fault ${index + 1}/${faults.length}: ${fault.name}`);
      const from = states.length;
      const committedBefore = writer.committed;
      timeline.restart();
      await fault.inject();
      await until('the listener to be live again', () => states.slice(from).some((change) => change.state === 'live'), 20_000);
      const duringFault = writer.committed - committedBefore;
      // Notifications flow again; then the writer stops and the last ones land.
      await until('a few more updates', () => writer.committed >= committedBefore + duringFault + 20);
      await writer.pause();
      const pausedAt = timeline.elapsed;
      const found = await settle(db, cache);
      const waited = timeline.elapsed - pausedAt;
      const total = writer.committed - committedBefore;
      if (found.length === 0) {
        healed += 1;
        print(
          `  cache == table: yes (${cache.all().length} rows, ${updates(duringFault)} during the fault, ${total - duringFault} after; ` +
            `compared field by field${waited > 100 ? `, equal ${waited} ms after the writer paused` : ''})`,
        );
      } else {
        print(`  cache == table: NO, ${found.length} row(s) differ ${SETTLE_MS} ms after the writer paused:`);
        for (const line of found) print(`    ${line}`);
      }
      writer.resume();
    }

    watching.unsubscribe();
    print();
    const verdict = healed === faults.length ? 'the cache matched the table after each' : 'the cache was left out of date';
    print(
      `${healed}/${faults.length} faults healed: ${verdict} ` +
        `(${updates(writer.committed)} in all; ${writer.failed} failed while the server was down)`,
    );
    return healed === faults.length;
  } finally {
    clearTimeout(watchdog);
    await cleanUp();
  }
}

runToExit('demo', main);
