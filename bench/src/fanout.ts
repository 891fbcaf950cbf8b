import { fork, type ChildProcess } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { cpus, loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { startEmbeddedPostgres } from '../../tools/embedded-postgres.js';
import type { FanoutMessage, FanoutTask } from './fanout-worker.js';
import { now } from './protocol.js';
import { cpuBetween, ServerCpu } from './server-cpu.js';
import { createTable, stampede, type StampedeConfig, type StampedeResult } from './stampede.js';
import { stampedeLine, stampedeSection } from './stampede-table.js';
import { thousands } from './stats.js';

/**
 * `npm run bench:fanout [-- --quick] [-- --write] [-- --stampede-only]`: N independent application
 * instances (each a Nest app with its own LISTEN connection; several per process) on one channel
 * while a sender commits at a steady rate. Per N: delivery latency to the LAST instance (p50, p99),
 * the sender's commit rate with and without them listening, and the server's CPU. Then what
 * batching buys, and a resync stampede (see stampede.ts) without and with `resync` options.
 * Prints a table and one JSON line; `--write` writes bench/FANOUT.md (from a whole run only);
 * `--stampede-only` runs the stampede alone.
 */
const quick = process.argv.includes('--quick');
const write = process.argv.includes('--write');
const stampedeOnly = process.argv.includes('--stampede-only');
if (write && stampedeOnly) throw new Error('--write rewrites all of bench/FANOUT.md: run everything (leave out --stampede-only)');
const COUNTS = quick ? [1, 10] : [1, 10, 50, 100];
const RATE = 200; // notifications per second, each its own commit
const SECONDS = quick ? 3 : 10;
const EXPECTED = RATE * SECONDS;
const MAX_RATE_MS = quick ? 1_000 : 3_000;
const STAMPEDE_INSTANCES = quick ? 10 : 100;
const STAMPEDE_ROWS = quick ? 10_000 : 100_000;
/** The fleet's `resync` settings compared. */
const STAMPEDE_CONFIGS: StampedeConfig[] = [
  { label: 'unlimited', resync: {} },
  { label: 'concurrency: 4', resync: { concurrency: 4 } },
  { label: 'jitterMs: 2000', resync: { jitterMs: 2_000 } },
  { label: 'concurrency: 4, jitterMs: 2000', resync: { concurrency: 4, jitterMs: 2_000 } },
];
const WORKER = fileURLToPath(new URL('./fanout-worker.js', import.meta.url));
const log = (line: string) => process.stderr.write(`${line}\n`);

const embedded = process.env.BENCH_DATABASE_URL ? undefined : await startEmbeddedPostgres({ maxConnections: 400 }); // the stampede's fleet: LISTEN, pool and slot connections of 100 instances
const databaseUrl = process.env.BENCH_DATABASE_URL ?? embedded!.url;
const sender = new pg.Pool({ connectionString: databaseUrl, max: 8, application_name: 'fanout-sender' });
sender.on('error', () => undefined);
const serverVersion = (await sender.query<{ server_version: string }>('SHOW server_version')).rows[0]!.server_version;

const serverCpu = embedded ? ServerCpu.of(embedded.port) : undefined;
const serverCpuSeconds = () => serverCpu?.seconds();

/** Commits `SELECT pg_notify` as fast as 8 connections allow for `ms`; returns commits per second. */
async function maxCommitRate(channel: string, ms: number): Promise<number> {
  let commits = 0;
  const until = Date.now() + ms;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (Date.now() < until) {
        await sender.query('SELECT pg_notify($1, $2)', [channel, 'x']);
        commits += 1;
      }
    }),
  );
  return (commits * 1000) / ms;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))]!;
}

interface FanoutResult {
  instances: number;
  processes: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  missed: number;
  commitsPerSecond: number;
  serverCpuPercent: number | null;
}

async function fanout(instances: number, channel: string): Promise<FanoutResult> {
  const processes = Math.min(instances, Math.max(2, cpus().length * 2));
  const workers: ChildProcess[] = [];
  const messages = new Map<ChildProcess, (message: FanoutMessage) => void>();
  const next = (worker: ChildProcess) => new Promise<FanoutMessage>((resolve) => messages.set(worker, resolve));
  for (let w = 0; w < processes; w++) {
    const share = Math.floor(instances / processes) + (w < instances % processes ? 1 : 0);
    const task: FanoutTask = { databaseUrl, channel, instances: share, expected: EXPECTED, applicationName: `fanout-${instances}-${w}` };
    const worker = fork(WORKER, [], { env: { ...process.env, FANOUT_TASK: JSON.stringify(task) }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    worker.on('message', (message: FanoutMessage) => messages.get(worker)?.(message));
    workers.push(worker);
  }
  await Promise.all(workers.map((worker) => next(worker)));

  // Steady sends, each its own commit, paced by the clock.
  const cpuBefore = serverCpuSeconds();
  const startedNs = now();
  const sends: Promise<unknown>[] = [];
  for (let seq = 0; seq < EXPECTED; seq++) {
    const dueNs = startedNs + (seq * 1e9) / RATE;
    const waitMs = (dueNs - now()) / 1e6;
    if (waitMs > 1) await new Promise((resolve) => setTimeout(resolve, waitMs));
    sends.push(sender.query('SELECT pg_notify($1, $2)', [channel, `${seq}:${now()}`]));
  }
  await Promise.all(sends);
  const elapsedS = (now() - startedNs) / 1e9;
  const cpuUsed = cpuBetween(cpuBefore, serverCpuSeconds());
  const commitsPerSecond = await maxCommitRate(`${channel}_load`, MAX_RATE_MS);
  // Let the last notifications land before asking (they are in flight for milliseconds).
  await new Promise((resolve) => setTimeout(resolve, 500));

  const collected = workers.map((worker) => next(worker));
  for (const worker of workers) worker.send({ type: 'collect' });
  const reports = (await Promise.all(collected)) as Extract<FanoutMessage, { type: 'latencies' }>[];
  const slowest = Array.from({ length: EXPECTED }, (_, seq) => {
    const values = reports.map((report) => report.slowestUs[seq]!);
    return values.some((value) => value < 0) ? -1 : Math.max(...values);
  });
  const delivered = slowest.filter((value) => value >= 0).sort((a, b) => a - b);
  return {
    instances,
    processes,
    p50Ms: percentile(delivered, 50) / 1000,
    p99Ms: percentile(delivered, 99) / 1000,
    maxMs: delivered.at(-1)! / 1000,
    missed: EXPECTED - delivered.length,
    commitsPerSecond,
    serverCpuPercent: cpuUsed === undefined ? null : (cpuUsed / elapsedS) * 100,
  };
}

/** Sender-side cost of announcing 10,000 changed rows: per-row trigger, statement trigger, notify each, notifyMany. */
async function batching(): Promise<Record<string, number>> {
  const ROWS = 10_000;
  const PER_STATEMENT = 100;
  const client = await sender.connect();
  const timeMs = async (work: () => Promise<void>) => {
    const start = now();
    await work();
    return (now() - start) / 1e6;
  };
  try {
    await client.query(`
      DROP TABLE IF EXISTS fanout_rows;
      CREATE TABLE fanout_rows (id int PRIMARY KEY, v int NOT NULL DEFAULT 0);
      INSERT INTO fanout_rows (id) SELECT generate_series(1, ${ROWS});
      CREATE OR REPLACE FUNCTION fanout_row_changed() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN PERFORM pg_notify('fanout_rows', NEW.id::text); RETURN NULL; END $$;
      CREATE OR REPLACE FUNCTION fanout_rows_changed() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN PERFORM pg_notify('fanout_rows', (SELECT string_agg(id::text, ',') FROM changed)); RETURN NULL; END $$;`);
    const updateAll = async () => {
      for (let from = 1; from <= ROWS; from += PER_STATEMENT) {
        await client.query('UPDATE fanout_rows SET v = v + 1 WHERE id BETWEEN $1 AND $2', [from, from + PER_STATEMENT - 1]);
      }
    };
    await client.query('CREATE TRIGGER per_row AFTER UPDATE ON fanout_rows FOR EACH ROW EXECUTE FUNCTION fanout_row_changed()');
    const perRow = await timeMs(updateAll);
    await client.query('DROP TRIGGER per_row ON fanout_rows');
    await client.query(
      'CREATE TRIGGER per_statement AFTER UPDATE ON fanout_rows REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION fanout_rows_changed()',
    );
    const perStatement = await timeMs(updateAll);
    await client.query('DROP TRIGGER per_statement ON fanout_rows');
    const noTrigger = await timeMs(updateAll);
    const notifyEach = await timeMs(async () => {
      for (let id = 1; id <= ROWS; id++) await client.query('SELECT pg_notify($1, $2)', ['fanout_rows', String(id)]);
    });
    const notifyMany = await timeMs(async () => {
      for (let from = 1; from <= ROWS; from += PER_STATEMENT) {
        const ids = Array.from({ length: PER_STATEMENT }, (_, i) => String(from + i));
        await client.query('SELECT pg_notify(n.c, n.p) FROM unnest($1::text[], $2::text[]) AS n(c, p)', [ids.map(() => 'fanout_rows'), ids]);
      }
    });
    await client.query('DROP TABLE fanout_rows; DROP FUNCTION fanout_row_changed(); DROP FUNCTION fanout_rows_changed()');
    return { noTrigger, perRow, perStatement, notifyEach, notifyMany };
  } finally {
    client.release();
  }
}

log(`fanout: PostgreSQL ${serverVersion}, ${cpus().length} cores, ${RATE} commits/s for ${SECONDS} s per run`);
// The machine's 1-minute load average through the run: other work on it shows in every figure.
const loads = [loadavg()[0]!];
const loadTimer = setInterval(() => loads.push(loadavg()[0]!), 10_000).unref();
let baseline = 0;
const results: FanoutResult[] = [];
let batch: Record<string, number> = {};
if (!stampedeOnly) {
  baseline = await maxCommitRate('fanout_nobody', MAX_RATE_MS);
  log(`fanout: sender alone, nobody listening: ${thousands(baseline)} commits/s`);
  for (const instances of COUNTS) {
    const result = await fanout(instances, `fanout_${instances}`);
    results.push(result);
    log(
      `fanout: ${instances} instances in ${result.processes} processes: p50 ${(result.p50Ms).toFixed(2)} ms, p99 ${(result.p99Ms).toFixed(2)} ms, ` +
        `max ${(result.maxMs).toFixed(1)} ms, missed ${result.missed}; sender ${thousands(result.commitsPerSecond)} commits/s; ` +
        `server CPU ${result.serverCpuPercent === null ? 'n/a' : `${(result.serverCpuPercent).toFixed(1)}%`}`,
    );
  }
  batch = await batching();
  log(`fanout: announcing 10,000 changed rows (100 per statement): ${Object.entries(batch).map(([k, v]) => `${k} ${(v).toFixed(0)} ms`).join(', ')}`);
}
log(`stampede: ${STAMPEDE_INSTANCES} instances caching ${thousands(STAMPEDE_ROWS)} rows each; every LISTEN backend terminated at once`);
await createTable(databaseUrl, STAMPEDE_ROWS);
const stampedes: StampedeResult[] = [];
for (const config of STAMPEDE_CONFIGS) {
  stampedes.push(await stampede(config, databaseUrl, serverCpu, STAMPEDE_INSTANCES, STAMPEDE_ROWS));
  log(stampedeLine(stampedes.at(-1)!));
}

clearInterval(loadTimer);
const load = { min: Math.min(...loads), max: Math.max(...loads) };
log(`fanout: load average (1 min) during the run: ${load.min.toFixed(1)} to ${load.max.toFixed(1)}`);
if (write) {
  const rows = results.map(
    (r) =>
      `| ${r.instances} | ${r.processes} | ${(r.p50Ms).toFixed(2)} | ${(r.p99Ms).toFixed(2)} | ${(r.maxMs).toFixed(1)} | ${r.missed} | ${thousands(r.commitsPerSecond)} | ${r.serverCpuPercent === null ? 'n/a' : (r.serverCpuPercent).toFixed(1)} |`,
  );
  await writeFile(
    new URL('../../../FANOUT.md', import.meta.url),
    [
      '# Fan-out: many instances on one channel',
      '',
      `From one run of \`npm run bench:fanout -- --write\` (PostgreSQL ${serverVersion}, ${cpus().length} cores, Node ${process.version};`,
      `the machine's 1-minute load average went from ${load.min.toFixed(1)} to ${load.max.toFixed(1)} during the run, other work included).`,
      `A sender commits ${RATE} notifications per second for ${SECONDS} s, each in its own transaction; every instance is`,
      'a Nest application of its own (its own LISTEN connection), several per process. Latency is from the send to the',
      'handler of the LAST instance to receive it.',
      '',
      `Sender alone, nobody listening: **${thousands(baseline)} commits/s** (8 connections, \`SELECT pg_notify\` each).`,
      '',
      `| instances | processes | p50 (ms) | p99 (ms) | max (ms) | missed | sender's max commits/s with them listening (load on a channel none of them listens on) | server CPU at ${RATE}/s (% of a core) |`,
      '| --- | --- | --- | --- | --- | --- | --- | --- |',
      ...rows,
      '',
      'Announcing 10,000 changed rows, 100 rows per UPDATE statement (sender side, one connection):',
      '',
      '| how | ms |',
      '| --- | --- |',
      `| no trigger (the UPDATEs alone) | ${(batch.noTrigger!).toFixed(0)} |`,
      `| per-row trigger (10,000 notifications) | ${(batch.perRow!).toFixed(0)} |`,
      `| statement-level trigger with a transition table (100 notifications of 100 ids) | ${(batch.perStatement!).toFixed(0)} |`,
      `| \`notify\` for each row, each its own commit | ${(batch.notifyEach!).toFixed(0)} |`,
      `| \`notifyMany\` of 100 per round trip | ${(batch.notifyMany!).toFixed(0)} |`,
      '',
      ...stampedeSection(stampedes, STAMPEDE_ROWS),
    ].join('\n'),
  );
}
console.log(JSON.stringify({ serverVersion, rate: RATE, seconds: SECONDS, baselineCommitsPerSecond: baseline, fanout: results, batchingMs: batch, stampede: stampedes, loadAverage: load }));
await sender.end();
await embedded?.destroy();
