/**
 * `npm run bench:channel`: where the time goes inside nestjs-pgln, without PostgreSQL or pg. A
 * channel of the current build and one of the baseline build (the module before issue 10's
 * telemetry and issue 11's async path) each take notifications in reads of 100, as pg hands them
 * over from one socket read, into one sync or one async handler that counts them. Prints ns per
 * notification, median of 9 rounds of 500,000 after warming up, both builds in one run; then what
 * routing a notification to its channel costs (see {@link routing}).
 */
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { buildBaseline, ROOT } from './baseline.js';
import { BASELINE_REVISION } from './protocol.js';
import { fixed, median, spread } from './stats.js';

const READ = 100;
const ROUND = 500_000;

async function measure(dist: string, async: boolean): Promise<number[]> {
  const url = (file: string) => pathToFileURL(join(dist, file)).href;
  const { Channel } = await import(url('pgln.channel.js'));
  const { Subscription } = await import(url('pgln.subscription.js'));
  // The current build keeps totals; the baseline has no such module.
  const totals = await import(url('pgln.counts.js')).then((m) => new m.Counts(), () => undefined);
  const turns = { begin() {}, note() {} };
  const channel = new Channel('bench', { logger: console, backoff: {}, maxQueuedNotifications: 1e9, turns, totals });
  let count = 0;
  const handler = async ? async () => void count++ : () => void count++;
  const subscription = new Subscription('bench', { name: 'bench', owner: {}, onNotification: handler }, 'connect');
  subscription.synced = subscription.receiving = true;
  channel.add(subscription);
  const notification = { channel: 'bench', payload: '1', processId: 1 };
  const round = async () => {
    const start = process.hrtime.bigint();
    for (let i = 0; i < ROUND; i += READ) {
      for (let j = 0; j < READ; j++) channel.push(notification);
      await channel.settled();
    }
    return Number(process.hrtime.bigint() - start) / ROUND;
  };
  for (let i = 0; i < 5; i++) await round();
  const times: number[] = [];
  for (let i = 0; i < 9; i++) times.push(await round());
  if (count !== 14 * ROUND) throw new Error(`counted ${count}, expected ${14 * ROUND}`);
  return times;
}

/**
 * Routing, as the listener does it: pg decodes every channel name into a new string, so finding
 * its channel means comparing it with the last channel's name and, when that differs, hashing it
 * for a `Map` lookup. ns per notification on top of decoding the name, median of 9 rounds.
 */
function routing(count: number): number[] {
  const names = Array.from({ length: count }, (_, i) => `bench_17_${i}`);
  const encoded = names.map((name) => Buffer.from(name));
  const channels = new Map(names.map((name) => [name, { name, n: 0 }]));
  let last: { name: string; n: number } | undefined;
  const route = (name: string) => {
    if (last?.name !== name) last = channels.get(name)!;
    return last;
  };
  const decodeOnly = (_name: string) => channels.get(names[0]!)!;
  const time = (find: (name: string) => { n: number }) => {
    const start = process.hrtime.bigint();
    for (let i = 0; i < ROUND; i++) {
      const bytes = encoded[i % count]!;
      find(bytes.toString('utf8', 0, bytes.length)).n++;
    }
    return Number(process.hrtime.bigint() - start) / ROUND;
  };
  for (let i = 0; i < 5; i++) time(route) + time(decodeOnly);
  return Array.from({ length: 9 }, () => time(route) - time(decodeOnly));
}

const builds = { [BASELINE_REVISION]: buildBaseline(), current: join(ROOT, 'dist') };
process.stdout.write('| build | handler | ns per notification (median of 9, min–max) |\n| --- | --- | --- |\n');
for (const async of [false, true]) {
  for (const [name, dist] of Object.entries(builds)) {
    const times = await measure(dist, async);
    process.stdout.write(`| ${name} | ${async ? 'async' : 'sync'} | ${fixed(1)(median(times))} (${spread(times, fixed(1))}) |\n`);
  }
}
process.stdout.write('\n| routing by channel name | ns per notification (median of 9, min–max) |\n| --- | --- |\n');
for (const count of [1, 100]) {
  const times = routing(count);
  const what = count === 1 ? '1 channel: the name equals the last one' : '100 channels in turn: a Map lookup every time';
  process.stdout.write(`| ${what} | ${fixed(1)(median(times))} (${spread(times, fixed(1))}) |\n`);
}
