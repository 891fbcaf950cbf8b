/**
 * `npm run bench:channel`: where the time goes inside nestjs-pgln, without PostgreSQL or pg. A
 * channel of the current build and one of the baseline build (the module before issue 10's
 * telemetry and issue 11's async path) each take notifications in reads of 100, as pg hands them
 * over from one socket read, into one sync or one async handler that counts them. Prints ns per
 * notification, median of 9 rounds of 500,000 after warming up, both builds in one run.
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

const builds = { [BASELINE_REVISION]: buildBaseline(), current: join(ROOT, 'dist') };
process.stdout.write('| build | handler | ns per notification (median of 9, min–max) |\n| --- | --- | --- |\n');
for (const async of [false, true]) {
  for (const [name, dist] of Object.entries(builds)) {
    const times = await measure(dist, async);
    process.stdout.write(`| ${name} | ${async ? 'async' : 'sync'} | ${fixed(1)(median(times))} (${spread(times, fixed(1))}) |\n`);
  }
}
