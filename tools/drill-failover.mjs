// @ts-check
/**
 * `npm run drill:failover`: the sample app against a real three-node Patroni cluster while a writer
 * changes products, in two setups, each on a fresh cluster (tools/drill/cluster.mjs):
 * - `haproxy`: the app and the writer through HAProxy, which routes to the leader;
 * - `direct`: no proxy, the app and the writer given the three nodes' addresses
 *   (`postgres://…@127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3/postgres?target_session_attrs=primary`),
 *   the sample's pool made by createMultiHostPool.
 * Two faults each: a planned switchover, and a leader killed with SIGKILL. For each it prints the
 * time until the LISTEN connection noticed, until it was live again, and the lost updates (rows
 * where the app's cache differs from the table: must be 0). Everything runs on loopback in a
 * temporary folder, removed at the end (kept, with every component's log, when the drill failed).
 */
import 'reflect-metadata';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NestFactory } from '@nestjs/core';
import { createMultiHostPool, PglnService } from 'nestjs-pgln';
import { missing, own, sleep, startCluster, until } from './drill/cluster.mjs';

const log = (/** @type {string} */ line) => process.stdout.write(`${line}\n`);

const absent = missing();
if (absent.length) {
  log(`drill: cannot run, missing ${absent.join(', ')} (apt-get install -y patroni etcd-server haproxy postgresql)`);
  process.exit(2);
}

const dir = mkdtempSync(join(tmpdir(), 'pgln-drill-'));
own(dir);
let succeeded = false;
process.on('exit', () => {
  if (succeeded) rmSync(dir, { recursive: true, force: true });
  else log(`drill: logs kept in ${dir}`);
});

// The compiled sample (`npm run drill:failover` builds it first), loaded at run time only.
const sample = (/** @type {string} */ path) => import(new URL(`../sample/dist/sample/src/${path}`, import.meta.url).href);
const { createSchema } = await sample('database/schema.js');
const { AppModule } = await sample('app.module.js');
const { ProductCache } = await sample('products/product-cache.service.js');

/**
 * One setup on a fresh cluster: the app and a writer on `cluster.url`, a switchover, then the new
 * leader killed. Resolves with each fault's figures.
 * @param {'haproxy' | 'direct'} setup
 */
async function run(setup) {
  const cluster = await startCluster({ dir: join(dir, setup), haproxy: setup === 'haproxy', log });
  const { url } = cluster;
  try {
    await createSchema(url);
    // One host (HAProxy): a plain pg.Pool; the three nodes: one that keeps the primary.
    const setupPool = createMultiHostPool({ connectionString: url, max: 1 });
    await setupPool.query("INSERT INTO products (name, price_cents) SELECT 'product ' || i, 100 + i FROM generate_series(1, 47) AS i");
    await setupPool.end();
    const app = await NestFactory.create(AppModule.forDatabase(url), { logger: ['error', 'warn'] });
    await app.init();
    const pgln = app.get(PglnService);
    /** @type {{ state: string; at: number }[]} */
    const transitions = [];
    pgln.state$.subscribe((change) => transitions.push({ state: change.state, at: Date.now() }));

    const db = createMultiHostPool({ connectionString: url, max: 4 });
    db.on('error', () => undefined);
    let failedWrites = 0;

    /** Raises random products' prices, one commit each; failed writes (during a failover) are not retried. */
    const writer = {
      writes: 0,
      running: false,
      /** @type {Promise<void> | undefined} */
      loop: undefined,
      resume() {
        this.running = true;
        this.loop = (async () => {
          while (this.running) {
            const id = 1 + Math.floor(Math.random() * 50);
            await db.query('UPDATE products SET price_cents = price_cents + 1 WHERE id = $1', [id]).then(
              () => void (this.writes += 1),
              async () => {
                failedWrites += 1;
                await sleep(20);
              },
            );
          }
        })();
      },
      async pause() {
        this.running = false;
        await this.loop;
      },
    };
    writer.resume();

    /** Rows where the cache differs from the table (read from the leader). */
    async function lostUpdates() {
      const { rows } = await db.query('SELECT id, name, price_cents AS "priceCents", version FROM products ORDER BY id');
      const cached = new Map(app.get(ProductCache).all().map((/** @type {{ id: number }} */ p) => [p.id, JSON.stringify(p)]));
      return rows.filter((row) => cached.get(row.id) !== JSON.stringify(row)).length + Math.max(0, cached.size - rows.length);
    }

    /** @param {string} name @param {() => Promise<number | void> | void} fault resolves with when it began, if not at once */
    async function drill(name, fault) {
      const writesBefore = writer.writes;
      await until('a few writes', () => writer.writes > writesBefore + 100);
      const before = transitions.length;
      const calledAt = Date.now();
      const startedAt = (await fault()) ?? calledAt;
      await until(`the listener to go live again after the ${name}`, () => transitions.slice(before).some((t) => t.state === 'live'), 120_000);
      const noticed = transitions.slice(before).find((t) => t.state !== 'live');
      const live = transitions.slice(before).find((t) => t.state === 'live');
      const writesAfter = writer.writes;
      await until('writes to go on', () => writer.writes > writesAfter + 100);
      // Compare with the writer paused, once the last notifications have landed.
      await writer.pause();
      await until('the cache to settle', async () => (await lostUpdates()) === 0, 5_000).catch(() => undefined);
      const lost = await lostUpdates();
      writer.resume();
      const result = {
        setup,
        fault: name,
        detectMs: noticed ? noticed.at - startedAt : null,
        liveAgainMs: live ? live.at - startedAt : null,
        lostUpdates: lost,
        leaderAfter: await cluster.leader(),
      };
      log(`drill: ${JSON.stringify(result)}`);
      return result;
    }

    const results = [];
    const first = /** @type {string} */ (await cluster.leader());
    const candidate = /** @type {string} */ (cluster.nodes.find((node) => node.name !== first)?.name);
    results.push(await drill(`switchover ${first} -> ${candidate}`, () => cluster.switchover(first, candidate)));
    const killed = /** @type {string} */ (await cluster.leader());
    results.push(await drill(`leader ${killed} killed (SIGKILL to Patroni and PostgreSQL)`, () => cluster.kill(killed)));
    await writer.pause();
    await app.close();
    await db.end();
    const summary = { setup, writes: writer.writes, failedWrites, results };
    log(`drill: ${JSON.stringify(summary)}`);
    return summary;
  } finally {
    cluster.stop();
  }
}

const summaries = [];
for (const setup of /** @type {const} */ (['haproxy', 'direct'])) summaries.push(await run(setup));
log(JSON.stringify(summaries));
succeeded = summaries.every((summary) => summary.results.every((result) => result.lostUpdates === 0));
process.exit(succeeded ? 0 : 1);
