import 'reflect-metadata';
import * as current from 'nestjs-pgln';
import pg from 'pg';
import pgListen from 'pg-listen';
import postgres from 'postgres';
import { startPglnApp } from './pgln-app.js';
import { now, type ReceiverMessage, type ReceiverTask } from './protocol.js';

/**
 * One contender in a process of its own: it LISTENs, feeds every notification to `onPayload`
 * (which does the counting), and reports over IPC. Nothing else runs here, so its CPU time is
 * the contender's cost.
 */
const task = JSON.parse(process.env.BENCH_TASK!) as ReceiverTask;
const send = (message: ReceiverMessage) => process.send!(message);

let received = 0;
let startNs = 0;
let startCpu: NodeJS.CpuUsage | undefined;
const latencies = task.mode === 'latency' ? new Float64Array(task.expected) : undefined;

const warmup = task.warmup ?? 0;

/** The whole per-notification work of the benchmark: count, and stamp the first and last arrival. */
function onPayload(payload: string): void {
  if (received === warmup) {
    startNs = now();
    startCpu = process.cpuUsage();
  }
  if (latencies) latencies[received] = (now() - Number(payload)) / 1000;
  else if (task.mode === 'recovery') send({ type: 'probe', payload, atNs: now() });
  received += 1;
  if (received === warmup + task.expected) finish();
}

function finish(): void {
  if (task.mode === 'count') {
    const cpu = process.cpuUsage(startCpu);
    send({ type: 'counted', elapsedNs: now() - startNs, cpuUs: cpu.user + cpu.system });
  } else if (latencies) {
    const sorted = Array.from(latencies).sort((a, b) => a - b);
    const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
    send({ type: 'latency', p50Us: at(0.5), p99Us: at(0.99), maxUs: sorted.at(-1)!, received });
  } else if (task.mode === 'memory') {
    void reportMemory();
  }
}

let memoryBefore: NodeJS.MemoryUsage | undefined;
function settledMemory(): NodeJS.MemoryUsage {
  for (let i = 0; i < 3; i++) global.gc!();
  return process.memoryUsage();
}
async function reportMemory(): Promise<void> {
  await new Promise((resolve) => setImmediate(resolve));
  const after = settledMemory();
  send({
    type: 'memory',
    heapBefore: memoryBefore!.heapUsed,
    heapAfter: after.heapUsed,
    rssBefore: memoryBefore!.rss,
    rssAfter: after.rss,
  });
}

async function startRawPg(): Promise<void> {
  const client = new pg.Client({ connectionString: task.databaseUrl, application_name: task.applicationName });
  client.on('error', () => undefined); // a bare client does not reconnect: that is the point of comparison
  client.on('notification', (message) => onPayload(message.payload!));
  await client.connect();
  await client.query(task.channels.map((channel) => `LISTEN ${client.escapeIdentifier(channel)}`).join('; '));
}

// pg-listen is CommonJS compiled from TypeScript: from ESM its function is the default's default.
const createSubscriber = pgListen.default;

async function startPgListen(): Promise<void> {
  const subscriber = createSubscriber(
    { connectionString: task.databaseUrl, application_name: task.applicationName },
    // Raw payloads like everyone else (its default parses JSON); its delay between failed attempts
    // set to our initial one. Its first attempt after a loss is immediate, as ours is.
    { parse: (text: string) => text, retryInterval: 100, retryTimeout: 60_000 },
  );
  subscriber.events.on('error', () => undefined);
  subscriber.events.on('notification', (message: { payload?: unknown }) => onPayload(message.payload as string));
  await subscriber.connect();
  for (const channel of task.channels) await subscriber.listenTo(channel);
}

async function startPostgresJs(): Promise<void> {
  // backoff 0: reconnect without delay, as close to the others as it allows.
  const sql = postgres(task.databaseUrl, { backoff: () => 0, connection: { application_name: task.applicationName }, onnotice: () => undefined });
  for (const channel of task.channels) await sql.listen(channel, onPayload);
}

/**
 * A registered OpenTelemetry SDK, as an application sets it up before creating the Nest app:
 * spans batched to an exporter that drops them, metrics read by a periodic reader (every 60 s,
 * its default) into one that drops them. What they cost is the SDK's work in this process.
 */
async function registerSdk(): Promise<void> {
  const { context, metrics, trace } = await import('@opentelemetry/api');
  const { AsyncLocalStorageContextManager } = await import('@opentelemetry/context-async-hooks');
  const { BasicTracerProvider, BatchSpanProcessor } = await import('@opentelemetry/sdk-trace-base');
  const { MeterProvider, PeriodicExportingMetricReader, AggregationTemporality } = await import('@opentelemetry/sdk-metrics');
  const success = { code: 0 };
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  trace.setGlobalTracerProvider(
    new BasicTracerProvider({
      spanProcessors: [new BatchSpanProcessor({ export: (_spans, done) => done(success), shutdown: async () => undefined })],
    }),
  );
  const exporter = {
    export: (_metrics: unknown, done: (result: typeof success) => void) => done(success),
    forceFlush: async () => undefined,
    shutdown: async () => undefined,
    selectAggregationTemporality: () => AggregationTemporality.CUMULATIVE,
  };
  metrics.setGlobalMeterProvider(new MeterProvider({ readers: [new PeriodicExportingMetricReader({ exporter })] }));
}

async function startPgln(
  async: boolean,
  telemetry?: { traces: boolean; metrics: boolean },
  lib: typeof current = current,
  options: Partial<current.PglnModuleOptions> = {},
): Promise<void> {
  const handler = async ? async (payload: string) => onPayload(payload) : (payload: string) => onPayload(payload);
  await startPglnApp(task.channels, handler, { connectionString: task.databaseUrl, applicationName: task.applicationName, telemetry, ...options }, lib);
}

const starters = {
  'raw-pg': startRawPg,
  'pg-listen': startPgListen,
  'postgres.js': startPostgresJs,
  'pgln-sync': () => startPgln(false),
  'pgln-spare': () => startPgln(false, undefined, current, { listener: { spare: true } }),
  'pgln-async': () => startPgln(true),
  'pgln-baseline': async () => startPgln(false, undefined, await import(task.baseline!)),
  'pgln-telemetry-off': () => startPgln(false, { traces: false, metrics: false }),
  'pgln-otel-metrics': async () => {
    await registerSdk();
    await startPgln(false, { traces: false, metrics: true });
  },
  'pgln-otel': async () => {
    await registerSdk();
    await startPgln(false);
  },
};

// Exit on request, normally, so that `--cpu-prof` can write its profile.
process.on('message', (message) => message === 'exit' && process.exit(0));
await starters[task.contender]();
if (task.mode === 'memory') memoryBefore = settledMemory();
send({ type: 'ready' });
