import 'reflect-metadata';
import { Injectable, Module, type INestApplicationContext } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { OnNotification, PglnModule } from 'nestjs-pgln';
import pg from 'pg';
import { now } from './protocol.js';

/**
 * Several independent application instances in one process, as a fan-out benchmark worker: each a
 * Nest application of its own with its own LISTEN connection, all on one channel. Each records,
 * per notification, the time from send to its handler; the worker reports the slowest instance's.
 */
export interface FanoutTask {
  databaseUrl: string;
  channel: string;
  instances: number;
  /** Notifications the sender will send (sequence numbers 0 to expected - 1). */
  expected: number;
  applicationName: string;
}

export type FanoutMessage =
  | { type: 'ready' }
  /** Per sequence number, the latency (µs) to the slowest instance of this worker; -1 where one missed it. */
  | { type: 'latencies'; slowestUs: number[] };

const task = JSON.parse(process.env.FANOUT_TASK!) as FanoutTask;
const send = (message: FanoutMessage) => process.send!(message);

/** One instance's handler: `seq:sentNs` payloads, their latency kept by sequence number. */
function followerFor(expected: number) {
  @Injectable()
  class Follower {
    readonly latencyUs = new Float64Array(expected).fill(-1);
    @OnNotification(task.channel)
    arrived(payload: string) {
      const colon = payload.indexOf(':');
      this.latencyUs[Number(payload.slice(0, colon))] = (now() - Number(payload.slice(colon + 1))) / 1000;
    }
  }
  return Follower;
}

// The instances of one process share a small pool (their notify path, unused here but for the startup probe).
const pool = new pg.Pool({ connectionString: task.databaseUrl, max: 1 });
const Follower = followerFor(task.expected);
const apps: INestApplicationContext[] = [];
for (let i = 0; i < task.instances; i++) {
  @Module({
    imports: [PglnModule.forRoot({ pool, applicationName: `${task.applicationName}-${i}`, isGlobal: false })],
    providers: [Follower],
  })
  class InstanceModule {}
  apps.push(await NestFactory.createApplicationContext(InstanceModule, { logger: false }));
}
send({ type: 'ready' });

process.on('message', async (message: { type: 'collect' }) => {
  if (message.type !== 'collect') return;
  const followers = apps.map((app) => app.get(Follower).latencyUs);
  const slowestUs = Array.from({ length: task.expected }, (_, seq) => {
    let slowest = 0;
    for (const latencies of followers) {
      const latency = latencies[seq]!;
      if (latency < 0) return -1;
      if (latency > slowest) slowest = latency;
    }
    return slowest;
  });
  send({ type: 'latencies', slowestUs });
  for (const app of apps) await app.close();
  await pool.end();
  process.exit(0);
});
