import 'reflect-metadata';
import { Injectable, Module, type INestApplicationContext } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { OnNotification, OnOutOfSync, PglnModule, PglnService, type OutOfSyncEvent, type PglnResyncOptions, type PglnState } from 'nestjs-pgln';
import pg from 'pg';
import { filter, firstValueFrom } from 'rxjs';
import { now } from './protocol.js';

/**
 * Several application instances in one process, as a resync stampede benchmark worker: each a Nest
 * application of its own (its own LISTEN connection and its own pool) that keeps a whole table in
 * memory: its out-of-sync handler reads every row, its notification handler applies one row's new
 * version. Every instance of the fleet shares one `applicationName`, so they share resync slots.
 */
export interface StampedeTask {
  databaseUrl: string;
  channel: string;
  /** The table, `(id int PRIMARY KEY, version int)`, ids 1 to rows. */
  table: string;
  rows: number;
  instances: number;
  applicationName: string;
  resync: PglnResyncOptions;
}

/** What one instance saw from the fault on (times on the machine's monotonic clock, ns). */
export interface InstanceReport {
  /** When it last became live. */
  liveAtNs: number;
  /** Its state when asked (once everything settled). */
  state: PglnState;
  /** Its last reload: when it started and how long it took. */
  reloadStartNs: number;
  reloadMs: number;
  /** Rows whose cached version differs from the table's (asked once everything settled). */
  stale: number;
  /** Each notification it applied: when sent, and how long after that it was applied (ms). */
  sentNs: number[];
  delayMs: number[];
  /** Times its LISTEN connection came back. */
  reconnects: number;
}

export type StampedeMessage =
  | { type: 'ready' }
  /** An instance became live again (after having been anything else). */
  | { type: 'live'; instance: number; atNs: number }
  /** `stalls`: from ready on, when this process's event loop did not run (all its instances share it), as [from, to] ns. */
  | { type: 'report'; instances: InstanceReport[]; stalls: Array<[number, number]> };

const task = JSON.parse(process.env.STAMPEDE_TASK!) as StampedeTask;
const send = (message: StampedeMessage) => process.send!(message);

/** Every row's version by id: what a reload reads, as one query into memory. */
async function readTable(pool: pg.Pool): Promise<Int32Array<ArrayBuffer>> {
  const { rows } = await pool.query<{ id: number; version: number }>(`SELECT id, version FROM ${task.table}`);
  const versions = new Int32Array(task.rows + 1);
  for (const row of rows) versions[row.id] = row.version;
  return versions;
}

/** One instance's cache of the table, on its own pool. */
function cacheFor(pool: pg.Pool) {
  @Injectable()
  class TableCache {
    versions = new Int32Array(0);
    reloadStartNs = 0;
    reloadMs = 0;
    readonly sentNs: number[] = [];
    readonly delayMs: number[] = [];

    @OnOutOfSync(task.channel)
    async reload(_event: OutOfSyncEvent): Promise<void> {
      const started = now();
      this.versions = await readTable(pool);
      this.reloadStartNs = started;
      this.reloadMs = (now() - started) / 1e6;
    }

    /** `id:version:sentNs`: a newer version of one row (versions only grow, so applying one twice is harmless). */
    @OnNotification(task.channel)
    apply(payload: string): void {
      const [id, version, sent] = payload.split(':').map(Number) as [number, number, number];
      if (version > this.versions[id]!) this.versions[id] = version;
      this.sentNs.push(sent);
      this.delayMs.push((now() - sent) / 1e6);
    }
  }
  return TableCache;
}

const pools: pg.Pool[] = [];
const apps: INestApplicationContext[] = [];
const caches: InstanceType<ReturnType<typeof cacheFor>>[] = [];
const liveAtNs: number[] = [];
for (let i = 0; i < task.instances; i++) {
  // As an application's own pool: the reload's connection, closed again after a second idle.
  const pool = new pg.Pool({ connectionString: task.databaseUrl, max: 1, idleTimeoutMillis: 1_000, application_name: `${task.applicationName}-pool` });
  pool.on('error', () => undefined);
  const TableCache = cacheFor(pool);
  @Module({
    imports: [PglnModule.forRoot({ pool, applicationName: task.applicationName, resync: task.resync, isGlobal: false })],
    providers: [TableCache],
  })
  class InstanceModule {}
  const app = await NestFactory.createApplicationContext(InstanceModule, { logger: process.env.STAMPEDE_LOG ? ['warn', 'error'] : false });
  pools.push(pool);
  apps.push(app);
  caches.push(app.get(TableCache));
  liveAtNs.push(now());
  app.get(PglnService).state$.subscribe(({ state, previous }) => {
    if (state !== 'live' || previous === 'live') return;
    liveAtNs[i] = now();
    send({ type: 'live', instance: i, atNs: liveAtNs[i]! });
  });
}
// Ready once every instance is live: connected, its first reload done (with slots, they take turns).
await Promise.all(apps.map((app) => firstValueFrom(app.get(PglnService).state$.pipe(filter(({ state }) => state === 'live')))));
// A tick every 10 ms: a gap of more than 50 ms is a stall (another instance's reload parsing rows, or no CPU for this process).
const stalls: Array<[number, number]> = [];
let tickNs = now();
setInterval(() => {
  const at = now();
  if (at - tickNs > 50e6) stalls.push([tickNs, at]);
  tickNs = at;
}, 10).unref();
send({ type: 'ready' });

process.on('message', async (message: { type: 'report' }) => {
  if (message.type !== 'report') return;
  const table = await readTable(pools[0]!);
  const instances = caches.map((cache, i): InstanceReport => {
    let stale = 0;
    for (let id = 1; id <= task.rows; id++) if (cache.versions[id] !== table[id]) stale += 1;
    const { reconnects, state } = apps[i]!.get(PglnService).stats();
    return { liveAtNs: liveAtNs[i]!, state, reloadStartNs: cache.reloadStartNs, reloadMs: cache.reloadMs, stale, sentNs: cache.sentNs, delayMs: cache.delayMs, reconnects };
  });
  send({ type: 'report', instances, stalls });
  for (const app of apps) await app.close();
  for (const pool of pools) await pool.end();
  process.exit(0);
});
