import 'reflect-metadata';
import { Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { fork, type ChildProcess } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { cpus, loadavg } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { PglnModule, PglnService } from 'nestjs-pgln';
import pg from 'pg';
import { startEmbeddedPostgres } from '../../tools/embedded-postgres.js';
import { buildBaseline } from './baseline.js';
import { pairedPath, pathTable } from './path.js';
import { notificationBlock, Relay } from './relay.js';
import { BASELINE_REVISION, CONTENDERS, TELEMETRY_CONTENDERS, now, type Contender, type ReceiverMessage, type ReceiverTask } from './protocol.js';
import { fixed, median, spread, thousands } from './stats.js';

/**
 * `npm run bench [-- --quick] [-- --write]`: every contender, every scenario, in one run, against
 * one PostgreSQL (embedded unless BENCH_DATABASE_URL is set). Prints a table and, last, one JSON
 * line with every figure. `--write` also writes bench/RESULTS.md.
 */
const quick = process.argv.includes('--quick');
const write = process.argv.includes('--write');
/** `--only=delivery` runs one scenario (delivery, latency, notify, recovery, memory, telemetry, path), for profiling. */
const only = process.argv.find((arg) => arg.startsWith('--only='))?.slice('--only='.length);
/** `--profile=pgln-sync` runs that contender's receivers under `node --cpu-prof` (profiles in bench/profiles). */
const profile = process.argv.find((arg) => arg.startsWith('--profile='))?.slice('--profile='.length);
/** `--contenders=raw-pg,pgln-sync` narrows the delivery scenario of an `--only=delivery` run to those. */
const picked = process.argv
  .find((arg) => arg.startsWith('--contenders='))
  ?.slice('--contenders='.length)
  .split(',') as Contender[] | undefined;
const unknownContender = picked?.find((c) => !CONTENDERS.includes(c));
if (unknownContender) throw new Error(`--contenders: unknown contender "${unknownContender}" (known: ${CONTENDERS.join(', ')})`);
const ROUNDS = quick ? 1 : 3;
/** Delivery rates vary most (the server, the sender and the receiver share the cores): more rounds. */
const DELIVERY_ROUNDS = quick ? 1 : 7;
const DELIVERY_TOTAL = quick ? 50_000 : 200_000;
/**
 * Notifications handled before the clock starts. A run of 200,000 takes about 0.15 s, and when
 * V8 gets round to optimizing the hot code in that time varied a bare client's CPU per
 * notification by 2× from round to round.
 */
const WARMUP = quick ? 20_000 : 100_000;
const BATCH = 200_000;
const LATENCY_RATE = 5_000;
const LATENCY_SECONDS = quick ? 3 : 10;
const RECOVERY_RUNS = quick ? 3 : 10;
const MEMORY_TOTAL = quick ? 200_000 : 1_000_000;
const RECEIVER = fileURLToPath(new URL('./receiver.js', import.meta.url));

const embedded = process.env.BENCH_DATABASE_URL ? undefined : await startEmbeddedPostgres();
const databaseUrl = process.env.BENCH_DATABASE_URL ?? embedded!.url;
const admin = new pg.Pool({ connectionString: databaseUrl, max: 8, application_name: 'bench-sender' });
admin.on('error', () => undefined);
const serverVersion = (await admin.query<{ server_version: string }>('SHOW server_version')).rows[0]!.server_version;
const log = (line: string) => process.stderr.write(`${line}\n`);
let sequence = 0;

/** A receiver process; `next(type)` resolves with its next message of that type. */
class Receiver {
  private readonly child: ChildProcess;
  private readonly waiting = new Map<string, (message: ReceiverMessage) => void>();
  readonly probes: { payload: string; atNs: number }[] = [];
  private probeListener?: (payload: string, atNs: number) => void;

  constructor(readonly task: ReceiverTask) {
    this.child = fork(RECEIVER, [], {
      env: { ...process.env, BENCH_TASK: JSON.stringify(task) },
      execArgv: [
        ...(task.mode === 'memory' ? ['--expose-gc'] : []),
        ...(task.contender === profile ? ['--cpu-prof', `--cpu-prof-dir=${fileURLToPath(new URL('../../../profiles', import.meta.url))}`] : []),
      ],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    this.child.on('message', (message: ReceiverMessage) => {
      if (message.type === 'probe') {
        this.probes.push(message);
        this.probeListener?.(message.payload, message.atNs);
        return;
      }
      this.waiting.get(message.type)?.(message);
    });
  }

  next<T extends ReceiverMessage['type']>(type: T, timeoutMs = 120_000): Promise<Extract<ReceiverMessage, { type: T }>> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.task.contender}: no "${type}" within ${timeoutMs} ms`)), timeoutMs);
      this.waiting.set(type, (message) => {
        clearTimeout(timer);
        resolve(message as Extract<ReceiverMessage, { type: T }>);
      });
    });
  }

  /** Resolves with the time the receiver handled `payload`, or undefined after `timeoutMs`. */
  probe(payload: string, timeoutMs: number): Promise<number | undefined> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(undefined), timeoutMs);
      this.probeListener = (received, atNs) => {
        if (received !== payload) return;
        clearTimeout(timer);
        this.probeListener = undefined;
        resolve(atNs);
      };
    });
  }

  async stop(): Promise<void> {
    // A bare pg.Client's process may be gone already: nothing keeps it alive once its connection dies.
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.send('exit');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(timer);
  }
}

let baseline: string | undefined;

async function receiver(contender: Contender, mode: ReceiverTask['mode'], channels: string[], expected: number, url = databaseUrl, warmup = 0) {
  if (contender === 'pgln-baseline') baseline ??= pathToFileURL(join(buildBaseline(), 'index.js')).href;
  const r = new Receiver({
    baseline,
    contender,
    mode,
    channels,
    expected,
    warmup,
    databaseUrl: url,
    applicationName: `bench-${contender.replace('.', '')}-${++sequence}`,
  });
  await r.next('ready');
  return r;
}

/** Sends `total` notifications spread over `channels`, in transactions of BATCH (so the sender is never the limit). */
async function flood(channels: string[], total: number): Promise<void> {
  for (let from = 1; from <= total; from += BATCH) {
    const to = Math.min(total, from + BATCH - 1);
    await admin.query(
      'SELECT pg_notify(($3::text[])[1 + i % cardinality($3::text[])], i::text) FROM generate_series($1::int, $2::int) AS i',
      [from, to, channels],
    );
  }
}

const channelsFor = (count: number) => Array.from({ length: count }, (_, i) => `bench_${++sequence}_${i}`);

// ---------------------------------------------------------------- 1. delivery throughput
interface Delivery {
  rate: number[];
  cpuUs: number[];
}
/** Where scenario 1's notifications come from (see {@link Relay}). */
type Source = 'relay' | 'server';
const relay = await new Relay(new URL(databaseUrl).hostname, Number(new URL(databaseUrl).port || 5432)).start();

/**
 * Each round runs every contender once, back to back, in an order that rotates. From the relay,
 * every receiver reads the same {@link DELIVERY_TOTAL} notifications from memory; from the server,
 * they are committed at once and PostgreSQL sends them.
 */
async function deliveryThroughput(channelCount: number, contenders = CONTENDERS, source: Source = 'relay'): Promise<Record<Contender, Delivery>> {
  const results = Object.fromEntries(contenders.map((c) => [c, { rate: [], cpuUs: [] }])) as unknown as Record<Contender, Delivery>;
  for (let round = 0; round < DELIVERY_ROUNDS; round++) {
    // The order rotates from round to round: whoever runs first in a round measured slower, whatever it was.
    const shift = round % contenders.length;
    for (const contender of [...contenders.slice(shift), ...contenders.slice(0, shift)]) {
      const channels = channelsFor(channelCount);
      const r = await receiver(contender, 'count', channels, DELIVERY_TOTAL, source === 'relay' ? relay.url(databaseUrl) : databaseUrl, WARMUP);
      const counted = r.next('counted');
      if (source === 'relay') await relay.inject(notificationBlock(channels, WARMUP + DELIVERY_TOTAL, 1));
      else await flood(channels, WARMUP + DELIVERY_TOTAL);
      const { elapsedNs, cpuUs } = await counted;
      await r.stop();
      results[contender].rate.push(DELIVERY_TOTAL / (elapsedNs / 1e9));
      results[contender].cpuUs.push(cpuUs / DELIVERY_TOTAL);
      log(`  delivery ${channelCount} ch from the ${source}, round ${round + 1}, ${contender}: ${thousands(DELIVERY_TOTAL / (elapsedNs / 1e9))}/s`);
    }
  }
  return results;
}

// ---------------------------------------------------------------- 2. latency at a steady rate
interface Latency {
  p50: number[];
  p99: number[];
  max: number[];
}
async function latency(): Promise<Record<Contender, Latency>> {
  const total = LATENCY_RATE * LATENCY_SECONDS;
  const results = Object.fromEntries(CONTENDERS.map((c) => [c, { p50: [], p99: [], max: [] }])) as unknown as Record<Contender, Latency>;
  for (let round = 0; round < ROUNDS; round++) {
    for (const contender of CONTENDERS) {
      const [channel] = channelsFor(1);
      const r = await receiver(contender, 'latency', [channel!], total);
      const measured = r.next('latency', 120_000);
      // A steady rate in ticks of about 1 ms: what is due in a tick goes in one statement, each
      // notification carrying its own send time. One transaction per notification would load the
      // server and the sender so much that scheduling, not the receiver, would set the tail.
      const start = now();
      let sent = 0;
      const inFlight: Promise<unknown>[] = [];
      while (sent < total) {
        const due = Math.min(total, Math.floor(((now() - start) / 1e9) * LATENCY_RATE));
        if (due > sent) {
          const stamps = Array.from({ length: due - sent }, () => String(now()));
          inFlight.push(admin.query('SELECT pg_notify($1, t) FROM unnest($2::text[]) AS t', [channel, stamps]));
          sent = due;
        }
        await sleep(1);
      }
      await Promise.all(inFlight);
      const { p50Us, p99Us, maxUs } = await measured;
      await r.stop();
      results[contender].p50.push(p50Us / 1000);
      results[contender].p99.push(p99Us / 1000);
      results[contender].max.push(maxUs / 1000);
      log(`  latency round ${round + 1}, ${contender}: p50 ${fixed(2)(p50Us / 1000)} ms, p99 ${fixed(2)(p99Us / 1000)} ms`);
    }
  }
  return results;
}

// ---------------------------------------------------------------- 3. notify throughput
const NOTIFY_TIMEOUT_MS = 10_000; // the module's default notifyTimeoutMs
@Module({ imports: [PglnModule.forRoot({ connectionString: databaseUrl, applicationName: 'bench-notify', notifyTimeoutMs: NOTIFY_TIMEOUT_MS })] })
class NotifyModule {}

/** Scenario 3's concurrencies, and how many notifications each sender sends per round at each. */
const NOTIFY_CONCURRENCIES = [1, 16, 64] as const;
type NotifyConcurrency = (typeof NOTIFY_CONCURRENCIES)[number];
const NOTIFY_PER_ROUND: Record<NotifyConcurrency, number> = quick ? { 1: 500, 16: 2_000, 64: 2_000 } : { 1: 1_000, 16: 4_000, 64: 4_000 };
const NOTIFY_ROUNDS = quick ? 7 : 25;
const NOTIFY_MANY_CALLS = quick ? 100 : 300;

interface NotifyResults {
  /** Per concurrency, each round's rate (notifications per second) of the raw pool and of the module. */
  raw: Record<NotifyConcurrency, number[]>;
  pgln: Record<NotifyConcurrency, number[]>;
  /** Per concurrency, each round's module rate over the same round's raw rate. */
  ratios: Record<NotifyConcurrency, number[]>;
  /** Per concurrency, each round's CPU of this process per notification (µs), module minus raw pool. */
  cpuExtraUs: Record<NotifyConcurrency, number[]>;
  /** `notifyMany` of 100 per call, at concurrency 1, notifications per second per round. */
  many: number[];
}

/**
 * Sends `total` notifications through `send`, `concurrency` at a time; resolves with the rate and
 * this process's CPU (user and system) per notification, in µs.
 */
async function burst(send: (channel: string, payload: string) => Promise<unknown>, concurrency: number, total: number) {
  let next = 0;
  const start = now();
  const cpu = process.cpuUsage();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < total) await send('bench_notify', String(next++));
    }),
  );
  const { user, system } = process.cpuUsage(cpu);
  return { rate: total / ((now() - start) / 1e9), cpuUs: (user + system) / total };
}

/**
 * `PglnService.notify` against a raw `pg.Pool` with the module's pool settings, paired round by
 * round: each round sends the same notifications through both, back to back, raw first in even
 * rounds and the module first in odd ones; the ratio is taken within the round.
 */
async function notifyThroughput(): Promise<NotifyResults> {
  const app = await NestFactory.createApplicationContext(NotifyModule, { logger: false });
  const pgln = app.get(PglnService);
  // The module's pool: 10 connections, a connect timeout of notifyTimeoutMs, pg's defaults otherwise.
  const raw = new pg.Pool({ connectionString: databaseUrl, max: 10, connectionTimeoutMillis: NOTIFY_TIMEOUT_MS, application_name: 'bench-notify-raw' });
  const senders = {
    raw: (channel: string, payload: string) => raw.query('SELECT pg_notify($1, $2)', [channel, payload]),
    pgln: (channel: string, payload: string) => pgln.notify(channel, payload),
  };
  const perConcurrency = () => ({ 1: [], 16: [], 64: [] });
  const results: NotifyResults = { raw: perConcurrency(), pgln: perConcurrency(), ratios: perConcurrency(), cpuExtraUs: perConcurrency(), many: [] };
  log(`  load average ${loadavg().map(fixed(2)).join(' ')}`);
  for (const concurrency of NOTIFY_CONCURRENCIES) {
    const total = NOTIFY_PER_ROUND[concurrency];
    // A round not counted: both pools open their connections, V8 optimizes both paths.
    for (const send of [senders.raw, senders.pgln, senders.raw, senders.pgln]) await burst(send, concurrency, total);
    for (let round = 0; round < NOTIFY_ROUNDS; round++) {
      const order = round % 2 === 0 ? (['raw', 'pgln'] as const) : (['pgln', 'raw'] as const);
      const measured: Partial<Record<'raw' | 'pgln', { rate: number; cpuUs: number }>> = {};
      for (const name of order) measured[name] = await burst(senders[name], concurrency, total);
      const { raw: r, pgln: p } = measured as Record<'raw' | 'pgln', { rate: number; cpuUs: number }>;
      results.raw[concurrency].push(r.rate);
      results.pgln[concurrency].push(p.rate);
      results.ratios[concurrency].push(p.rate / r.rate);
      results.cpuExtraUs[concurrency].push(p.cpuUs - r.cpuUs);
      log(
        `  notify c${concurrency} round ${round + 1} (${order.join(' first, then ')}): raw ${thousands(r.rate)}/s, pgln ${thousands(p.rate)}/s, ` +
          `${fixed(2)(p.rate / r.rate)} x; CPU ${fixed(1)(r.cpuUs)} / ${fixed(1)(p.cpuUs)} µs per notification`,
      );
    }
  }
  const batch = Array.from({ length: 100 }, (_, i) => ({ channel: 'bench_notify', payload: String(i) }));
  for (let round = 0; round < ROUNDS; round++) {
    const rate = (await burst(() => pgln.notifyMany(batch), 1, NOTIFY_MANY_CALLS)).rate * batch.length;
    results.many.push(rate);
    log(`  notifyMany (100 per call) c1 round ${round + 1}: ${thousands(rate)}/s`);
  }
  log(`  load average ${loadavg().map(fixed(2)).join(' ')}`);
  await raw.end();
  await app.close();
  return results;
}

/** Scenario 3's table: per concurrency, both rates and the per-round ratio. */
function notifyTable(n: NotifyResults): string[][] {
  return [
    ...NOTIFY_CONCURRENCIES.map((c) => [
      String(c),
      `${thousands(median(n.raw[c]))} (${spread(n.raw[c], thousands)})`,
      `${thousands(median(n.pgln[c]))} (${spread(n.pgln[c], thousands)})`,
      `${fixed(2)(median(n.ratios[c]))} (${spread(n.ratios[c], fixed(2))})`,
      fixed(2)(median(n.cpuExtraUs[c])),
    ]),
    ['1, notifyMany of 100 per call', '', `${thousands(median(n.many))} (${spread(n.many, thousands)})`, '', ''],
  ];
}
const NOTIFY_HEAD = [
  'concurrency',
  'raw pg.Pool /s',
  'PglnService.notify /s',
  'notify / raw, per round: median (min–max)',
  'CPU µs per notification, notify − raw (per round, median)',
];
const notifyRatios = (n: NotifyResults) =>
  Object.fromEntries(NOTIFY_CONCURRENCIES.map((c) => [`c${c}`, Number(fixed(2)(median(n.ratios[c])))])) as Record<`c${NotifyConcurrency}`, number>;

// ---------------------------------------------------------------- 4. recovery after pg_terminate_backend
/**
 * All contenders listen at once and are killed in turn, round after round, so that whatever
 * drifts on the machine during the run affects each of them alike.
 */
async function recovery(): Promise<Record<string, (number | null)[]>> {
  const contenders: Contender[] = ['raw-pg', 'pg-listen', 'postgres.js', 'pgln-sync', 'pgln-spare'];
  const receivers = await Promise.all(
    contenders.map(async (contender) => {
      const [channel] = channelsFor(1);
      return { contender, channel: channel!, r: await receiver(contender, 'recovery', [channel!], Number.MAX_SAFE_INTEGER) };
    }),
  );
  const results: Record<string, (number | null)[]> = Object.fromEntries(contenders.map((c) => [c, []]));
  for (let run = 0; run < RECOVERY_RUNS; run++) {
    for (const { contender, channel, r } of receivers) {
      // A contender that never came back is not tried again.
      if (results[contender]!.includes(null)) continue;
      // Each was live for over a second since its last kill: one that drops right after connecting backs off.
      await sleep(500);
      const payload = `probe-${run}`;
      const handled = r.probe(payload, 5_000);
      const killedAt = now();
      // The backend that LISTENs: the peers' one connection, or the module's `<name>-listener` (and its
      // pool's, idle), never a spare (`<name>-listener-spare`), which is there to take over.
      await admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name IN ($1, $1 || '-listener')", [
        r.task.applicationName,
      ]);
      let done = false;
      // Probes back to back, so the clock stops within a round trip of the moment the receiver can hear again.
      const probing = (async () => {
        while (!done) await admin.query('SELECT pg_notify($1, $2)', [channel, payload]).catch(() => undefined);
      })();
      const at = await handled;
      done = true;
      await probing;
      results[contender]!.push(at === undefined ? null : (at - killedAt) / 1e6);
      log(`  recovery ${contender} #${run + 1}: ${at === undefined ? 'never (5 s)' : `${fixed(1)((at - killedAt) / 1e6)} ms`}`);
    }
  }
  await Promise.all(receivers.map(({ r }) => r.stop()));
  return results;
}

// ---------------------------------------------------------------- 5. memory
async function memory() {
  const channels = channelsFor(1);
  const r = await receiver('pgln-sync', 'memory', channels, MEMORY_TOTAL);
  const measured = r.next('memory', 300_000);
  await flood(channels, MEMORY_TOTAL);
  const result = await measured;
  await r.stop();
  return result;
}

// ---------------------------------------------------------------- run and report
log(`nestjs-pgln benchmark: PostgreSQL ${serverVersion}, Node ${process.version}, ${cpus().length} cores${quick ? ' (quick)' : ''}`);
if (only && !['delivery', 'latency', 'notify', 'recovery', 'memory', 'telemetry', 'path'].includes(only)) throw new Error(`--only=${only}: unknown scenario`);
const runs = (scenario: string) => !only || only === scenario;
if (only) {
  log(`only ${only}${profile ? `, profiling ${profile}` : ''}`);
  if (runs('delivery')) {
    const one = await deliveryThroughput(1, picked);
    const hundred = await deliveryThroughput(100, picked);
    process.stdout.write(`${JSON.stringify({ one, hundred })}\n`);
  }
  if (runs('latency')) process.stdout.write(`${JSON.stringify(await latency())}\n`);
  if (runs('notify')) {
    const n = await notifyThroughput();
    process.stdout.write(`${[NOTIFY_HEAD, ...notifyTable(n)].map((row) => `| ${row.join(' | ')} |`).join('\n')}\n`);
    process.stdout.write(`${JSON.stringify({ notify_ratio_vs_raw_pool: notifyRatios(n), ...n })}\n`);
  }
  if (runs('recovery')) process.stdout.write(`${JSON.stringify(await recovery())}\n`);
  if (runs('memory')) process.stdout.write(`${JSON.stringify(await memory())}\n`);
  if (runs('telemetry')) process.stdout.write(`${JSON.stringify(await deliveryThroughput(1, TELEMETRY_CONTENDERS))}\n`);
  if (runs('path')) process.stdout.write(`${pathTable(pairedPath(databaseUrl))}\n`);
  await admin.end();
  await relay.stop();
  await embedded?.destroy();
  process.exit(0);
}
log('1. delivery throughput, 1 channel');
const delivery1 = await deliveryThroughput(1);
log('   delivery throughput, 100 channels');
const delivery100 = await deliveryThroughput(100);
log('   delivery throughput, 1 channel, sent by the server');
const deliveryServer = await deliveryThroughput(1, CONTENDERS, 'server');
log('2. latency');
const latencies = await latency();
log('3. notify throughput');
const notifies = await notifyThroughput();
log('4. recovery');
const recoveries = await recovery();
log('5. memory');
const mem = await memory();
log('6. telemetry cost, delivery on 1 channel');
const telemetry = await deliveryThroughput(1, TELEMETRY_CONTENDERS);
log('7. the receive path alone, paired by round');
const paths = pairedPath(databaseUrl);
await admin.end();
await relay.stop();
await embedded?.destroy();

const MB = 1024 * 1024;
const lines: string[] = [];
const table = (head: string[], rows: string[][]) => {
  lines.push(`| ${head.join(' | ')} |`, `| ${head.map(() => '---').join(' | ')} |`, ...rows.map((row) => `| ${row.join(' | ')} |`));
  lines.push('');
};

/**
 * `c` against raw pg within each round (the contenders of a round run back to back, so what drifts
 * on the machine between rounds cancels out): its rate over raw pg's, and raw pg's CPU per
 * notification over its own (both higher is better, 1 = as fast or as cheap as a bare client).
 */
const vsRaw = (d: Record<Contender, Delivery>, c: Contender) => ({
  rate: d[c].rate.map((value, round) => value / d['raw-pg'].rate[round]!),
  cpu: d[c].cpuUs.map((value, round) => d['raw-pg'].cpuUs[round]! / value),
});
const verdict = (d: Record<Contender, Delivery>, c: Contender, of: 'rate' | 'cpu') => median(vsRaw(d, c)[of]);
const withSpread = (values: number[]) => `${fixed(2)(median(values))} (${spread(values, fixed(2))})`;

const deliveryRows = (d: Record<Contender, Delivery>, count: number) =>
  CONTENDERS.map((c) => [
    c,
    String(count),
    `${thousands(median(d[c].rate))} (${spread(d[c].rate, thousands)})`,
    withSpread(vsRaw(d, c).rate),
    fixed(2)(median(d[c].cpuUs)),
    withSpread(vsRaw(d, c).cpu),
  ]);
const deliveryHead = ['contender', 'channels', 'per s', 'rate vs raw pg', 'CPU µs per notification', 'CPU vs raw pg (raw / it)'];
lines.push(
  `### 1. Delivery throughput (${thousands(DELIVERY_TOTAL)} notifications after ${thousands(WARMUP)} to warm up, median of ${DELIVERY_ROUNDS} rounds, min–max)`,
  '',
  'Every receiver reads the same NotificationResponse messages, appended by a relay to what the server sends on its',
  'LISTEN connection: the rate is the receiver’s own. The ratios are computed within each round, against raw pg in',
  'the same round; the table gives their median and spread.',
  '',
);
table(deliveryHead, [...deliveryRows(delivery1, 1), ...deliveryRows(delivery100, 100)]);
lines.push(
  `### 1b. The same, sent by PostgreSQL (1 channel, median of ${DELIVERY_ROUNDS} rounds)`,
  '',
  'All notifications committed in one statement and sent by the server: its backend and the receiver share the 2 cores,',
  'so the rates move more from round to round.',
  '',
);
table(deliveryHead, deliveryRows(deliveryServer, 1));
lines.push(`### 2. Latency, notify to handler, at ${thousands(LATENCY_RATE)}/s for ${LATENCY_SECONDS} s (ms, median of ${ROUNDS})`, '');
table(
  ['contender', 'p50', 'p99', 'p99 min–max', 'max'],
  CONTENDERS.map((c) => [
    c,
    fixed(2)(median(latencies[c].p50)),
    fixed(2)(median(latencies[c].p99)),
    spread(latencies[c].p99, fixed(2)),
    fixed(2)(median(latencies[c].max)),
  ]),
);
lines.push(
  `### 3. Notify throughput (${thousands(NOTIFY_PER_ROUND[16])} notifications per sender per round at c16 and c64, ${thousands(NOTIFY_PER_ROUND[1])} at c1; ${NOTIFY_ROUNDS} rounds, paired)`,
  '',
  '`PglnService.notify` and a raw `pg.Pool` with the same settings, both running `SELECT pg_notify($1, $2)`, send the same',
  'notifications back to back in each round, the order alternating; the ratio is taken within each round.',
  '',
);
table(NOTIFY_HEAD, notifyTable(notifies));
lines.push(`### 4. Recovery: pg_terminate_backend to the first notification handled (ms, median of ${RECOVERY_RUNS})`, '');
table(
  ['contender', 'median', 'min–max'],
  Object.entries(recoveries).map(([name, values]) => {
    const ok = values.filter((v): v is number => v !== null);
    return [name, ok.length === values.length ? fixed(1)(median(ok)) : 'never (no reconnect)', spread(ok, fixed(1))];
  }),
);
lines.push(`### 5. Memory: nestjs-pgln before and after ${thousands(MEMORY_TOTAL)} notifications (after forced GC)`, '');
table(
  ['', 'before (MB)', 'after (MB)', 'growth (MB)'],
  [
    ['heap used', fixed(1)(mem.heapBefore / MB), fixed(1)(mem.heapAfter / MB), fixed(1)((mem.heapAfter - mem.heapBefore) / MB)],
    ['RSS', fixed(1)(mem.rssBefore / MB), fixed(1)(mem.rssAfter / MB), fixed(1)((mem.rssAfter - mem.rssBefore) / MB)],
  ],
);

/** Each round's rate of `c` over the same round's rate of the module before telemetry: the rounds ran back to back. */
const vsBaseline = (c: Contender) => telemetry[c].rate.map((value, round) => value / telemetry['pgln-baseline'].rate[round]!);
lines.push(
  `### 6. What OpenTelemetry costs (delivery, ${thousands(DELIVERY_TOTAL)} notifications on 1 channel, sync handler, median of ${DELIVERY_ROUNDS})`,
  '',
);
table(
  ['nestjs-pgln', '/s', `vs ${BASELINE_REVISION} (per round: median, min–max)`, 'CPU µs per notification'],
  TELEMETRY_CONTENDERS.map((c) => [
    {
      'pgln-baseline': `as of ${BASELINE_REVISION}, before telemetry, stats counters and named instances existed`,
      'pgln-telemetry-off': 'telemetry off (API never loaded, as without @opentelemetry/api)',
      'pgln-sync': '@opentelemetry/api installed, no SDK (the default)',
      'pgln-otel-metrics': 'SDK registered, metrics only (`traces: false`)',
      'pgln-otel': 'SDK registered, metrics and a span per handler call',
    }[c as string]!,
    `${thousands(median(telemetry[c].rate))} (${spread(telemetry[c].rate, thousands)})`,
    `${fixed(2)(median(vsBaseline(c)))} (${spread(vsBaseline(c), fixed(2))})`,
    fixed(2)(median(telemetry[c].cpuUs)),
  ]),
);

lines.push(
  '### 7. The receive path alone (`npm run bench:path`): 200,000 notifications pushed into each receiver’s socket, paired by round',
  '',
  'A bare pg.Client and two Nest applications with nestjs-pgln (sync and async handler) in one process, each reading the',
  'same bytes in turn, round after round: no syscalls, server or sender. Each ratio compares rounds a fraction of a',
  'second apart in the same process, which cancels this machine’s changes of speed; without syscalls, what the module',
  'adds weighs more than it does end to end. 6 processes of 15 rounds.',
  '',
  pathTable(paths),
  '',
);
const pathRatio = (channels: number, variant: string) => median(paths.find((p) => p.channels === channels && p.variant === variant)!.ratios);

const recoveryMedian = (name: string) => {
  const values = recoveries[name]!;
  return values.every((v) => v !== null) ? median(values as number[]) : null;
};

// The issue's targets, judged on this run alone.
const rate = (d: Record<Contender, Delivery>, c: Contender) => median(d[c].rate);
const p99 = (c: Contender) => median(latencies[c].p99);
const fastestPeer = Math.min(recoveryMedian('pg-listen') ?? Infinity, recoveryMedian('postgres.js') ?? Infinity);
const targets: [string, string, boolean][] = [
  ...([1, 100] as const).flatMap((count): [string, string, boolean][] => {
    const d = count === 1 ? delivery1 : delivery100;
    const sync = verdict(d, 'pgln-sync', 'rate');
    const async = verdict(d, 'pgln-async', 'rate');
    const pathSync = pathRatio(count, 'pgln-sync');
    const pathAsync = pathRatio(count, 'pgln-async');
    return [
      [`delivery, ${count} channel(s), sync handler, >= 0.95 x raw pg (scenario 1, per round)`, `${fixed(2)(sync)} x`, sync >= 0.95],
      [`delivery, ${count} channel(s), async handler, >= 0.8 x raw pg (scenario 1, per round)`, `${fixed(2)(async)} x`, async >= 0.8],
      [`receive path, ${count} channel(s), sync handler, >= 0.95 x raw pg (scenario 7, paired)`, `${fixed(2)(pathSync)} x`, pathSync >= 0.95],
      [`receive path, ${count} channel(s), async handler, >= 0.8 x raw pg (scenario 7, paired)`, `${fixed(2)(pathAsync)} x`, pathAsync >= 0.8],
    ];
  }),
  [
    'delivery ahead of pg-listen and postgres.js (1 and 100 channels)',
    `1 ch: ${thousands(rate(delivery1, 'pgln-sync'))} vs ${thousands(rate(delivery1, 'pg-listen'))} / ${thousands(rate(delivery1, 'postgres.js'))}; ` +
      `100 ch: ${thousands(rate(delivery100, 'pgln-sync'))} vs ${thousands(rate(delivery100, 'pg-listen'))} / ${thousands(rate(delivery100, 'postgres.js'))}`,
    (['pg-listen', 'postgres.js'] as Contender[]).every(
      (peer) => rate(delivery1, 'pgln-sync') > rate(delivery1, peer) && rate(delivery100, 'pgln-sync') > rate(delivery100, peer),
    ),
  ],
  ['p99 latency within 1 ms of raw pg', `${fixed(2)(p99('pgln-sync'))} vs ${fixed(2)(p99('raw-pg'))} ms`, p99('pgln-sync') <= p99('raw-pg') + 1],
  ...NOTIFY_CONCURRENCIES.map((c): [string, string, boolean] => [
    `notify at concurrency ${c} >= 0.95 x the raw pool (scenario 3, per round)`,
    `${fixed(2)(median(notifies.ratios[c]))} x`,
    median(notifies.ratios[c]) >= 0.95,
  ]),
  [
    'notifyMany >= 20 x sequential notify',
    `${fixed(1)(median(notifies.many) / median(notifies.pgln[1]))} x`,
    median(notifies.many) >= 20 * median(notifies.pgln[1]),
  ],
  [
    'recovery no slower than the fastest peer',
    `${fixed(1)(recoveryMedian('pgln-sync') ?? NaN)} vs ${fixed(1)(fastestPeer)} ms`,
    (recoveryMedian('pgln-sync') ?? Infinity) <= fastestPeer,
  ],
  [
    'recovery with listener: { spare: true } below both peers',
    `${fixed(1)(recoveryMedian('pgln-spare') ?? NaN)} vs ${fixed(1)(fastestPeer)} ms`,
    (recoveryMedian('pgln-spare') ?? Infinity) < fastestPeer,
  ],
  ['heap after 1M notifications within 10 MB of before', `${fixed(2)((mem.heapAfter - mem.heapBefore) / MB)} MB`, mem.heapAfter - mem.heapBefore <= 10 * MB],
];
lines.push('### Against the targets (this run)', '');
table(['target', 'measured', 'met'], targets.map(([name, measured, met]) => [name, measured, met ? 'yes' : '**no**']));
const figures = {
  machine: { cores: cpus().length, cpu: cpus()[0]?.model, node: process.version, postgres: serverVersion, quick },
  delivery_ratio_vs_raw_pg: Number(fixed(2)(verdict(delivery1, 'pgln-sync', 'rate'))),
  async_delivery_ratio_vs_raw_pg: Number(fixed(2)(verdict(delivery1, 'pgln-async', 'rate'))),
  cpu_ratio_vs_raw_pg: Number(fixed(2)(verdict(delivery1, 'pgln-sync', 'cpu'))),
  async_cpu_ratio_vs_raw_pg: Number(fixed(2)(verdict(delivery1, 'pgln-async', 'cpu'))),
  delivery_ratio_vs_raw_pg_100_channels: Number(fixed(2)(verdict(delivery100, 'pgln-sync', 'rate'))),
  async_delivery_ratio_vs_raw_pg_100_channels: Number(fixed(2)(verdict(delivery100, 'pgln-async', 'rate'))),
  cpu_ratio_vs_raw_pg_100_channels: Number(fixed(2)(verdict(delivery100, 'pgln-sync', 'cpu'))),
  server_delivery_ratio_vs_raw_pg: Number(fixed(2)(verdict(deliveryServer, 'pgln-sync', 'rate'))),
  path_ratio_vs_raw_pg: Object.fromEntries(paths.filter((p) => p.variant !== 'raw-pg').map((p) => [`${p.variant}_${p.channels}`, Number(fixed(2)(median(p.ratios)))])),
  server_delivery_per_s: Object.fromEntries(CONTENDERS.map((c) => [c, Math.round(median(deliveryServer[c].rate))])),
  delivery_per_s: Object.fromEntries(CONTENDERS.map((c) => [c, { one: Math.round(median(delivery1[c].rate)), hundred: Math.round(median(delivery100[c].rate)) }])),
  cpu_us_per_notification: Object.fromEntries(CONTENDERS.map((c) => [c, Number(fixed(3)(median(delivery1[c].cpuUs)))])),
  latency_ms: Object.fromEntries(
    CONTENDERS.map((c) => [c, { p50: Number(fixed(3)(median(latencies[c].p50))), p99: Number(fixed(3)(median(latencies[c].p99))), max: Number(fixed(3)(median(latencies[c].max))) }]),
  ),
  telemetry_ratio_vs_baseline: Object.fromEntries(TELEMETRY_CONTENDERS.map((c) => [c, Number(fixed(2)(median(vsBaseline(c))))])),
  telemetry_cpu_us_per_notification: Object.fromEntries(TELEMETRY_CONTENDERS.map((c) => [c, Number(fixed(3)(median(telemetry[c].cpuUs)))])),
  notify_ratio_vs_raw_pool: notifyRatios(notifies),
  notify_per_s: {
    ...Object.fromEntries(NOTIFY_CONCURRENCIES.flatMap((c) => [[`raw pg.Pool c${c}`, Math.round(median(notifies.raw[c]))], [`PglnService.notify c${c}`, Math.round(median(notifies.pgln[c]))]])),
    'PglnService.notifyMany (100 per call) c1': Math.round(median(notifies.many)),
  },
  recovery_ms: Object.fromEntries(Object.keys(recoveries).map((name) => [name, recoveryMedian(name)])),
  targets_met: Object.fromEntries(targets.map(([name, , met]) => [name, met])),
  memory_mb: {
    heap_before: Number(fixed(2)(mem.heapBefore / MB)),
    heap_after: Number(fixed(2)(mem.heapAfter / MB)),
    rss_before: Number(fixed(2)(mem.rssBefore / MB)),
    rss_after: Number(fixed(2)(mem.rssAfter / MB)),
  },
};

const report = lines.join('\n');
process.stdout.write(`\n${report}\n`);
if (write) {
  const header = [
    '# Benchmark results',
    '',
    `Measured ${new Date().toISOString().slice(0, 10)} with \`npm run bench -- --write\`, on ${cpus().length} cores (${cpus()[0]?.model}),`,
    `Node ${process.version}, PostgreSQL ${serverVersion} (${embedded ? 'embedded, on the same machine' : 'BENCH_DATABASE_URL'}).`,
    'Every contender runs in a process of its own, in turn, in the same run. See bench/README.md for what each scenario measures.',
    '',
  ];
  await writeFile(new URL('../../../RESULTS.md', import.meta.url), `${header.join('\n')}\n${report}\n\`\`\`json\n${JSON.stringify(figures, null, 2)}\n\`\`\`\n`);
}
process.stdout.write(`${JSON.stringify(figures)}\n`);
