import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import type { Browser, Page } from 'playwright-core';
import { freePort } from '../tools/embedded-postgres.js';
import { adminPool, databaseUrl, poolOnDroppedDatabase, terminate, unique } from './support/database.js';
import { TcpProxy } from './support/tcp-proxy.js';
import { waitFor } from './support/wait.js';

/**
 * The sample's live page in a real headless Chromium (Debian's `chromium`, driven by
 * playwright-core; .ci/run installs it): the sample runs as a process of its own, on a database of
 * its own, its connections through a proxy that can refuse them. The page must end equal to the
 * table after each fault: a lost LISTEN connection that cannot come back at once while rows
 * change, and the server process stopped and started again.
 */

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const missing = existsSync(CHROMIUM) ? undefined : `no Chromium at ${CHROMIUM} (apt-get install -y chromium, or set CHROMIUM_PATH)`;
if (missing) process.stdout.write(`\ntest/live-page.e2e.spec.ts is skipped: ${missing}\n`);
const withChromium = missing ? describe.skip : describe;

const root = join(import.meta.dirname, '..');

interface Row {
  id: number;
  name: string;
  price: string;
  version: number;
}

/** What the page shows, row by row. */
const shown = (page: Page): Promise<Row[]> =>
  page.$$eval('#rows tr', (rows) =>
    rows.map((row) => {
      const [id, name, price, version] = [...row.querySelectorAll('td')].map((cell) => cell.textContent ?? '');
      return { id: Number(id), name: name!, price: price!, version: Number(version) };
    }),
  );

/** The sample as `npm run sample` runs it: the package's build, then the sample's (once, for both suites). */
let built: Promise<void>;
beforeAll(() => {
  built = (async () => {
    for (const [command, args] of [['npm', ['run', 'build']], ['npx', ['tsc', '-p', 'sample/tsconfig.json']]] as const) {
      const result = spawnSync(command, args, { cwd: root, encoding: 'utf8' });
      if (result.status !== 0) throw new Error(`${command} ${args.join(' ')} failed:\n${result.stdout}${result.stderr}`);
    }
  })();
  return built;
}, 120_000);

/** Runs the sample's process with `env`; `output` collects what it prints. */
function runSample(env: Record<string, string>) {
  const child = spawn(process.execPath, [join(root, 'sample/dist/sample/src/main.js')], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const run = { child, output: '' };
  child.stdout.on('data', (chunk) => (run.output += chunk));
  child.stderr.on('data', (chunk) => (run.output += chunk));
  return run;
}

/** Resolves once the sample on `port` answers /health. */
const serving = (port: number) =>
  waitFor('the sample to serve', async () => (await fetch(`http://127.0.0.1:${port}/health`).catch(() => undefined))?.ok, { timeoutMs: 60_000 });

/** Stops it as Ctrl+C would; resolves with its exit code. */
function interrupt(child: ChildProcess): Promise<number | null> {
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  child.kill('SIGINT');
  return exited;
}

describe('the sample\'s process', () => {
  it('on its embedded PostgreSQL, exits 0 on Ctrl+C, printing no warning on the way out', async () => {
    const port = await freePort();
    const { DATABASE_URL: _, ...env } = process.env;
    const sample = runSample({ ...(env as Record<string, string>), PORT: String(port) });
    await serving(port);
    expect((await fetch(`http://127.0.0.1:${port}/products`)).status).toBe(200);
    const stopping = sample.output.length;
    expect(await interrupt(sample.child)).toBe(0);
    expect(sample.output.slice(stopping).split('\n').filter((line) => /WARN|ERROR|Warning/.test(line))).toEqual([]);
  }, 90_000);
});

withChromium('the sample\'s live page, in Chromium', () => {
  const admin = adminPool();
  const database = unique('pgln_live');
  let db: pg.Pool;
  let proxy: TcpProxy;
  let port: number;
  let sample: ReturnType<typeof runSample> | undefined;
  let browser: Browser;
  let page: Page;

  /** The table, as the page formats it. */
  const table = async (): Promise<Row[]> =>
    (await db.query('SELECT id, name, price_cents, version FROM products ORDER BY id')).rows.map((row) => ({
      id: row.id,
      name: row.name,
      price: (row.price_cents / 100).toFixed(2),
      version: row.version,
    }));

  const pageEqualsTable = (what: string) =>
    waitFor(what, async () => JSON.stringify(await shown(page)) === JSON.stringify(await table()));

  const text = (selector: string) => page.textContent(selector);
  /** Resolves once the element shows exactly `expected`. */
  const shows = (selector: string, expected: string) => page.locator(selector, { hasText: new RegExp(`^${expected.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}$`) }).waitFor();

  /** Starts the sample's process, its database URL through the proxy; resolves once it serves. */
  async function startSample(): Promise<void> {
    const url = new URL(databaseUrl());
    url.pathname = `/${database}`;
    sample = runSample({ DATABASE_URL: proxy.url(url.toString()), PORT: String(port) });
    await serving(port);
  }

  /** Stops it as Ctrl+C would; resolves with its exit code. */
  async function stopSample(): Promise<number | null> {
    const { child } = sample!;
    sample = undefined;
    return interrupt(child);
  }

  beforeAll(async () => {
    await built;
    await admin.query(`CREATE DATABASE ${database}`);
    const url = new URL(databaseUrl());
    url.pathname = `/${database}`;
    db = poolOnDroppedDatabase({ connectionString: url.toString(), application_name: 'pgln-test-admin' });
    proxy = await new TcpProxy(url.hostname, Number(url.port || 5432)).start();
    port = await freePort();
    await startSample();
    const { chromium } = await import('playwright-core');
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
    page = await browser.newPage({ viewport: { width: 900, height: 400 } });
    await page.goto(`http://127.0.0.1:${port}/`);
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    if (sample) await stopSample();
    await proxy?.stop();
    await db?.end();
    await admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
    await admin.end();
  });

  it('shows the table, live and in sync, and a price changed through the HTTP API', async () => {
    await pageEqualsTable('the page to show the table');
    expect(await text('#listener-state')).toBe('live');
    expect(await text('#stream-state')).toBe('connected');
    expect(await text('#note')).toMatch(/^Refetched 3 products at .* after an out-of-sync event \(listen\)\.$/);

    const started = Date.now();
    const response = await fetch(`http://127.0.0.1:${port}/products/1`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'Ristretto', priceCents: 240 }),
    });
    expect(response.status).toBe(204);
    await shows('#rows tr[data-id="1"] td:nth-child(3)', '2.40');
    process.stdout.write(`live page: the change showed ${Date.now() - started} ms after the PUT was sent\n`);
    await pageEqualsTable('the page to equal the table after the PUT');
  });

  it('shows the listener reconnecting while its connection cannot come back, then ends equal to the table', async () => {
    proxy.refuse(true);
    expect(await terminate(admin, 'pgln-sample-listener')).toBe(1);
    await shows('#listener-state', 'reconnecting');
    // Changed while the listener is away: notified to nobody.
    await db.query("UPDATE products SET price_cents = 199 WHERE name = 'Cappuccino'");
    await db.query("INSERT INTO products (name, price_cents) VALUES ('Flat white', 380)");
    await db.query("DELETE FROM products WHERE name = 'Croissant'");
    proxy.refuse(false);
    await shows('#listener-state', 'live');
    await pageEqualsTable('the page to equal the table after the reconnect');
    expect(await text('#note')).toMatch(/after an out-of-sync event \(reconnect\)\.$/);
  });

  it('recovers by itself when the server process stops and starts again', async () => {
    expect(await stopSample()).toBe(0);
    await shows('#stream-state', 'reconnecting');
    await db.query("UPDATE products SET price_cents = 555 WHERE name = 'Flat white'"); // while no server runs
    await startSample();
    await shows('#stream-state', 'connected');
    await pageEqualsTable('the page to equal the table after the restart');
    expect(await text('#listener-state')).toBe('live');
    expect(await text('#note')).toMatch(/after an out-of-sync event \(listen\)\.$/);
    const screenshot = process.env.PGLN_LIVE_PAGE_SCREENSHOT;
    if (screenshot) await page.screenshot({ path: screenshot });
  });
});
