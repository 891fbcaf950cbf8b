/**
 * `npm run bench:path`: the receive path alone, with nothing else running. One process holds a
 * bare `pg.Client` and two Nest applications with nestjs-pgln (a sync and an async decorated
 * handler), each LISTENing; in every round each of them in turn gets the same 200,000
 * NotificationResponse messages pushed through its socket's `data` event in 64 KB chunks, as reads
 * hand them over. That is pg's parser, the module's routing, ordering and handler call, without
 * syscalls, the server or a sender.
 *
 * Its ratios are paired by round: raw pg's time over the variant's, measured a fraction of a second
 * apart in the same process. Between processes, and from second to second, this machine runs the
 * same code at very different speeds (a bare client's round takes 170 or 310 ns per notification);
 * pairing cancels that. It is the strict measure: without syscalls, what the module adds weighs
 * more than it does end to end. PROCESSES processes of ROUNDS rounds, on 1 channel and on 100.
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { PglnService } from 'nestjs-pgln';
import pg from 'pg';
import { startEmbeddedPostgres } from '../../tools/embedded-postgres.js';
import { startPglnApp } from './pgln-app.js';
import { notificationBlock } from './relay.js';
import { fixed, median, spread } from './stats.js';

const PROCESSES = 6;
const ROUNDS = 15;
const TOTAL = 200_000;
const CHUNK = 65_536;

type Variant = 'raw-pg' | 'pgln-sync' | 'pgln-async';
const VARIANTS: Variant[] = ['raw-pg', 'pgln-sync', 'pgln-async'];

/** A receiver's socket, into which the bytes are pushed, and what it counted. */
interface Receiver {
  readonly socket: { emit(event: 'data', chunk: Buffer): boolean };
  count: number;
}

async function rawReceiver(url: string, channels: string[]): Promise<Receiver> {
  const client = new pg.Client({ connectionString: url });
  const receiver = { socket: (client as unknown as { connection: { stream: Receiver['socket'] } }).connection.stream, count: 0 };
  client.on('notification', (message) => {
    receiver.count += message.payload!.length;
  });
  await client.connect();
  await client.query(channels.map((channel) => `LISTEN ${channel}`).join('; '));
  return receiver;
}

/** nestjs-pgln in a Nest application of its own: a provider method decorated for every channel. */
async function pglnReceiver(url: string, channels: string[], async: boolean): Promise<Receiver> {
  let count = 0;
  const onPayload = (payload: string) => {
    count += payload.length;
  };
  const handler = async ? async (payload: string) => onPayload(payload) : (payload: string) => onPayload(payload);
  const app = await startPglnApp(channels, handler, { connectionString: url, applicationName: `path-${async ? 'async' : 'sync'}` });
  // The LISTEN session's socket: internals, read only here.
  type Internals = { listener: { session: { client: { connection: { stream: Receiver['socket'] } } } } };
  const socket = (app.get(PglnService) as unknown as Internals).listener.session.client.connection.stream;
  return {
    socket,
    get count() {
      return count;
    },
  };
}

/**
 * In a child: the three receivers side by side, then ROUNDS rounds in which each reads the same
 * bytes in turn. Prints, per variant, its ns per notification in every round (JSON).
 */
async function child(channelCount: number, url: string): Promise<void> {
  const channels = Array.from({ length: channelCount }, (_, i) => `path_${i}`);
  const receivers: Record<Variant, Receiver> = {
    'raw-pg': await rawReceiver(url, channels),
    'pgln-sync': await pglnReceiver(url, channels, false),
    'pgln-async': await pglnReceiver(url, channels, true),
  };
  const block = notificationBlock(channels, TOTAL, 1);
  const chunks: Buffer[] = [];
  for (let offset = 0; offset < block.length; offset += CHUNK) chunks.push(block.subarray(offset, offset + CHUNK));
  const times = Object.fromEntries(VARIANTS.map((variant) => [variant, [] as number[]])) as Record<Variant, number[]>;
  for (let round = 0; round < ROUNDS; round++) {
    for (const variant of VARIANTS) {
      const { socket } = receivers[variant];
      const start = process.hrtime.bigint();
      for (const chunk of chunks) {
        socket.emit('data', chunk);
        // Between reads the event loop runs the promise reactions of async handlers, as it would.
        await new Promise((resolve) => setImmediate(resolve));
      }
      times[variant].push(Number(process.hrtime.bigint() - start) / TOTAL);
    }
  }
  for (const variant of VARIANTS) if (receivers[variant].count === 0) throw new Error(`${variant} received nothing`);
  process.stdout.write(`${JSON.stringify(times)}\n`);
  process.exit(0);
}

/** What {@link pairedPath} measured for one channel count and variant. */
export interface PathResult {
  channels: number;
  variant: Variant;
  /** ns per notification, every round of every process. */
  ns: number[];
  /** raw pg's time over this variant's, round by round. */
  ratios: number[];
}

/** Runs {@link child} in PROCESSES fresh processes, on 1 channel and on 100. */
export function pairedPath(url: string): PathResult[] {
  const script = fileURLToPath(import.meta.url);
  const results: PathResult[] = [];
  for (const channelCount of [1, 100]) {
    const all = Object.fromEntries(VARIANTS.map((variant) => [variant, [] as number[]])) as Record<Variant, number[]>;
    for (let i = 0; i < PROCESSES; i++) {
      const times = JSON.parse(execFileSync(process.execPath, [script, '--child', String(channelCount), url], { encoding: 'utf8' })) as Record<Variant, number[]>;
      for (const variant of VARIANTS) all[variant].push(...times[variant]);
    }
    for (const variant of VARIANTS) {
      results.push({ channels: channelCount, variant, ns: all[variant], ratios: all[variant].map((time, round) => all['raw-pg'][round]! / time) });
    }
  }
  return results;
}

/** The table of {@link pairedPath}'s results, in Markdown. */
export function pathTable(results: PathResult[]): string {
  const rows = results.map(
    ({ channels, variant, ns, ratios }) => `| ${channels} | ${variant} | ${fixed(0)(median(ns))} | ${fixed(2)(median(ratios))} (${spread(ratios, fixed(2))}) |`,
  );
  return ['| channels | variant | ns per notification (median round) | vs raw pg, paired by round: median (min–max) |', '| --- | --- | --- | --- |', ...rows].join('\n');
}

if (process.argv[2] === '--child') {
  await child(Number(process.argv[3]), process.argv[4]!);
} else if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const embedded = process.env.BENCH_DATABASE_URL ? undefined : await startEmbeddedPostgres();
  process.stdout.write(`${pathTable(pairedPath(process.env.BENCH_DATABASE_URL ?? embedded!.url))}\n`);
  await embedded?.destroy();
}
