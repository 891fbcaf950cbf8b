import type { INestApplicationContext } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, relative } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { PglnService } from '../lib/index.js';
import { adminPool, databaseUrl, poolOnDroppedDatabase, unique } from './support/database.js';
import { CapturingLogger } from './support/logs.js';
import { waitFor } from './support/wait.js';

/**
 * The README's code works when pasted. Every TypeScript or JavaScript block is a file of this
 * repository (its first line `// path`, the rest that file exactly) or marked excerpts of some
 * (each part headed `// path (excerpt)`, its lines found in that file, in order); those files are
 * type-checked by `npm run typecheck` and tested where they live. The Quickstart's files are also
 * compiled on their own as a new application would (strict, every library's declarations
 * checked), and run against the real server with the README's own SQL.
 */

const root = join(import.meta.dirname, '..');
const readme = readFileSync(join(root, 'README.md'), 'utf8');

interface Block {
  /** 1-based line of the opening fence. */
  readonly line: number;
  readonly language: string;
  readonly lines: readonly string[];
}

const blocks: Block[] = [];
for (const match of readme.matchAll(/^```(\w*)\n([\s\S]*?)^```$/gm)) {
  const line = readme.slice(0, match.index).split('\n').length;
  blocks.push({ line, language: match[1]!, lines: match[2]!.replace(/\n$/, '').split('\n') });
}

const HEADER = /^\/\/ (\S+\.(?:ts|js|mjs|cjs))( \(excerpt\))?$/;
/** A line that only marks where an excerpt leaves something out. */
const ELISION = /^\/\/ (…|\.\.\.)$/;

/** What is wrong with a block, or undefined when it is a file of the repository or excerpts of some. */
function check(block: Block): string | undefined {
  const first = HEADER.exec(block.lines[0] ?? '');
  if (!first) return `its first line must be "// <path>" (a whole file) or "// <path> (excerpt)"; it is ${JSON.stringify(block.lines[0])}`;
  if (!first[2]) {
    const file = read(first[1]!);
    if (file === undefined) return `${first[1]} does not exist`;
    return block.lines.slice(1).join('\n') === file.replace(/\n$/, '') ? undefined : `it is not ${first[1]} as that file now is`;
  }
  // Excerpts: one part per header.
  let path = '';
  let fileLines: string[] = [];
  let from = 0;
  for (const [index, raw] of block.lines.entries()) {
    const header = HEADER.exec(raw);
    if (header) {
      if (!header[2]) return `line ${block.line + 1 + index}: a block of excerpts takes only "(excerpt)" headers`;
      path = header[1]!;
      const file = read(path);
      if (file === undefined) return `${path} does not exist`;
      fileLines = file.split('\n').map((line) => line.trim());
      from = 0;
      continue;
    }
    const line = raw.trim();
    if (line === '' || ELISION.test(line)) continue;
    const found = fileLines.findIndex((candidate, at) => at >= from && (candidate === line || (line.length >= 12 && candidate.endsWith(line))));
    if (found < 0) return `line ${block.line + 1 + index} (${JSON.stringify(line)}) is not in ${path} after its line ${from} (an excerpt keeps the file's order)`;
    from = found + 1;
  }
  return undefined;
}

function read(path: string): string | undefined {
  try {
    return readFileSync(join(root, path), 'utf8');
  } catch {
    return undefined;
  }
}

/** The blocks between a heading and the next heading of the same level. */
function section(heading: string): Block[] {
  const start = readme.split('\n').indexOf(heading) + 1;
  const level = heading.split(' ')[0]!;
  const end = readme.split('\n').findIndex((line, index) => index >= start && line.startsWith(`${level} `)) + 1;
  return blocks.filter((block) => block.line > start && block.line < end);
}

describe('README.md', () => {
  it('has TypeScript and JavaScript blocks that are files of the repository, or marked excerpts of them', () => {
    const code = blocks.filter((block) => ['ts', 'js'].includes(block.language));
    expect(code.length).toBeGreaterThan(10);
    const wrong = code.map((block) => ({ line: block.line, problem: check(block) })).filter(({ problem }) => problem);
    expect(wrong).toEqual([]);
  });

  it('has no code block without a language, so that none escapes the check above', () => {
    expect(blocks.filter((block) => block.language === '').map(({ line }) => line)).toEqual([]);
  });

  it('its TypeScript files compile as a new application\'s would (strict, every library\'s declarations checked)', async () => {
    const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
    const { stdout } = await promisify(execFile)(process.execPath, [tsc, '-p', 'examples/tsconfig.json', '--listFilesOnly'], { cwd: root });
    const compiled = new Set(stdout.split('\n').map((file) => relative(root, file.trim())));
    // The two that import drizzle-orm, whose own declarations fail skipLibCheck false: the repository's typecheck covers them.
    const drizzle = ['examples/orm-recipes.ts', 'examples/exactly-once-reloads.ts'];
    const shown = [...new Set(blocks.filter((block) => block.language === 'ts').flatMap((block) => block.lines.map((line) => HEADER.exec(line)?.[1]).filter((path) => path !== undefined)))];
    expect(shown.filter((path) => !compiled.has(path) && !drizzle.includes(path))).toEqual([]);
    await expect(promisify(execFile)(process.execPath, [tsc, '-p', 'examples/tsconfig.json'], { cwd: root })).resolves.toBeDefined();
  }, 60_000);
});

describe('README.md Quickstart, run against the real server with its own SQL', () => {
  const admin = adminPool();
  const database = unique('pgln_quickstart');
  let db: pg.Pool;
  let app: INestApplicationContext;

  const table = async () => (await db.query('SELECT id, name, price_cents AS "priceCents" FROM products ORDER BY id')).rows;

  beforeAll(async () => {
    await admin.query(`CREATE DATABASE ${database}`);
    const url = new URL(databaseUrl());
    url.pathname = `/${database}`;
    db = poolOnDroppedDatabase({ connectionString: url.toString() });
    const sql = section('## Quickstart').filter((block) => block.language === 'sql');
    expect(sql.length).toBeGreaterThanOrEqual(2); // the table, and the trigger
    for (const block of sql) await db.query(block.lines.join('\n'));
    // The application reads DATABASE_URL when its module is loaded.
    process.env.DATABASE_URL = url.toString();
    const { AppModule } = await import('../examples/quickstart/src/app.module.js');
    app = await NestFactory.createApplicationContext(AppModule, { logger: new CapturingLogger() });
  });

  afterAll(async () => {
    await app?.close();
    delete process.env.DATABASE_URL;
    await db?.end();
    await admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
    await admin.end();
  });

  it('loads the cache at startup, sees the service\'s writes and anyone else\'s, and resyncs after a lost connection', async () => {
    const { ProductCache } = await import('../examples/quickstart/src/product-cache.js');
    const { ProductsService } = await import('../examples/quickstart/src/products.service.js');
    const cache = app.get(ProductCache);
    const cached = async () => (await table()).every((row) => JSON.stringify(cache.get(row.id)) === JSON.stringify(row));
    expect(await cached()).toBe(true);

    expect(await app.get(ProductsService).setPrice(1, 240)).toEqual({ id: 1, name: 'Espresso', priceCents: 240 });
    await waitFor('the service\'s write in the cache', () => cache.get(1)?.priceCents === 240);

    await db.query('UPDATE products SET price_cents = 399 WHERE id = 2'); // the trigger announces it
    await waitFor('an outside write in the cache', () => cache.get(2)?.priceCents === 399);

    const pgln = app.get(PglnService);
    const killed = await admin.query(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'pgln-listener' AND datname = $1",
      [database],
    );
    expect(killed.rowCount).toBe(1);
    await waitFor('the listener to come back', () => pgln.stats().reconnects === 1 && pgln.state === 'live');
    await db.query("DELETE FROM products WHERE id = 1");
    await waitFor('the cache to equal the table', async () => (await cached()) && cache.get(1) === undefined);
  });
});
