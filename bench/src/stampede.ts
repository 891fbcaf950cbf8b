import { fork, type ChildProcess } from 'node:child_process';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { PglnResyncOptions } from 'nestjs-pgln';
import pg from 'pg';
import { now } from './protocol.js';
import type { ServerCpu } from './server-cpu.js';
import { ServerSampler } from './server-sampler.js';
import type { InstanceReport, StampedeMessage, StampedeTask } from './stampede-worker.js';

/**
 * The resync stampede: a fleet of instances, each caching a whole table (its out-of-sync handler
 * reads every row), loses every LISTEN connection at once (`pg_terminate_backend` of each, as a
 * server restart or a failover would) while a writer keeps updating rows and notifying. Per
 * `resync` setting: how long until every instance is live again, what the server went through,
 * and whether every cache ends equal to the table. `STAMPEDE_LOG=1` shows the instances' warnings.
 */
export interface StampedeConfig {
  label: string;
  resync: PglnResyncOptions;
}

export interface StampedeResult {
  label: string;
  resync: PglnResyncOptions;
  instances: number;
  processes: number;
  /** LISTEN backends terminated by the fault. */
  terminated: number;
  /** From the fault until the last instance was live again, and until half of them were. */
  allLiveMs: number;
  medianLiveMs: number;
  /** The reloads after the fault: the median and longest. */
  reloadMedianMs: number;
  reloadMaxMs: number;
  /** Server CPU: before the fault, and the most over any {@link CPU_WINDOW_MS} from the fault until all were live (% of a core). */
  cpuBeforePercent: number | null;
  peakCpuPercent: number | null;
  /** Server CPU seconds from the fault until all were live. */
  cpuSeconds: number | null;
  /** Client connections before the fault, and the most during recovery (all, and running a query). */
  connectionsBefore: number;
  peakConnections: number;
  peakActive: number;
  /** The most connections of each kind during recovery: LISTEN, resync slot, and the instances' pools (the reloads). */
  peakByRole: Record<string, number>;
  /** Notifications the writer committed from the fault until it stopped, and applied by the instances in all. */
  sent: number;
  /** The writer's commits from the fault until all were live: median and longest (ms). */
  commitMedianMs: number;
  commitMaxMs: number;
  applied: number;
  /** The longest delay of a notification sent before its instance was live again (held through the reconnect and reload). */
  heldMaxMs: number;
  /** The longest delay of one sent once its instance was live again. */
  liveMaxMs: number;
  /**
   * Notifications applied more than {@link LATE_MS} after they could have been: after they were
   * sent and their instance was live again, not counting the time their worker process did not run.
   */
  late: number;
  /** Cached rows that differ from the table once everything settled, summed over instances. */
  lost: number;
  /** The longest a worker process's event loop did not run during recovery (its instances' reloads parsing rows, or no CPU). */
  stallMaxMs: number;
  /** Instances that lost their connection again during recovery (reconnected more than once). */
  reconnectedAgain: number;
}

/** A notification applied this long after it was sent, to an instance live again, is late. */
export const LATE_MS = 1_000;
/** Peak CPU is the most over any window this long. */
export const CPU_WINDOW_MS = 500;
/** Writer's pace during the fault: commits per second, each updating one row and notifying. */
export const WRITES_PER_SECOND = 20;
const SAMPLE_BEFORE_MS = 2_000;
const WRITE_AFTER_MS = 2_000;
const SETTLE_MS = 1_000;
const RECOVERY_TIMEOUT_MS = 180_000;
const WORKER = fileURLToPath(new URL('./stampede-worker.js', import.meta.url));
const TABLE = 'stampede_rows';
const CHANNEL = 'stampede_rows';
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** One commit of the writer: when it was sent, and how long it took (ms). */
interface Commit {
  sentNs: number;
  ms: number;
}

/** Fills the table every instance caches: `rows` rows, all at version 0. */
export async function createTable(databaseUrl: string, rows: number): Promise<void> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  await client.query(`DROP TABLE IF EXISTS ${TABLE}; CREATE TABLE ${TABLE} (id int PRIMARY KEY, version int NOT NULL DEFAULT 0)`);
  await client.query(`INSERT INTO ${TABLE} (id) SELECT generate_series(1, ${rows})`);
  await client.query(`VACUUM ANALYZE ${TABLE}`);
  await client.end();
}

/** Updates a random row and notifies its new version, {@link WRITES_PER_SECOND} commits a second, until stopped; returns the commits. */
function startWriter(databaseUrl: string, rows: number): { stop: () => Promise<Commit[]> } {
  const client = new pg.Client({ connectionString: databaseUrl, application_name: 'stampede-writer' });
  const commits: Commit[] = [];
  let running = true;
  const done = (async () => {
    await client.connect();
    for (let next = now(); running; next += 1e9 / WRITES_PER_SECOND) {
      const waitMs = (next - now()) / 1e6;
      if (waitMs > 1) await sleep(waitMs);
      const sentNs = now();
      await client.query(
        `WITH u AS (UPDATE ${TABLE} SET version = version + 1 WHERE id = $1 RETURNING id, version) ` +
          `SELECT pg_notify($2, u.id || ':' || u.version || ':' || $3) FROM u`,
        [1 + Math.floor(Math.random() * rows), CHANNEL, String(sentNs)],
      );
      commits.push({ sentNs, ms: (now() - sentNs) / 1e6 });
    }
    await client.end();
  })();
  return { stop: async () => ((running = false), await done, commits) };
}

/** One fleet of `instances` with `config.resync`, one fault, measured. */
export async function stampede(config: StampedeConfig, databaseUrl: string, cpu: ServerCpu | undefined, instances: number, rows: number): Promise<StampedeResult> {
  const applicationName = `stampede-${config.label.replace(/\W+/g, '-')}`;
  const processes = Math.min(instances, Math.max(2, cpus().length * 2));
  const workers: ChildProcess[] = [];
  /** The instances live again since the fault. */
  const live = new Set<string>();
  let faultNs = Infinity;
  const waiters = new Map<ChildProcess, { resolve: (message: StampedeMessage) => void; reject: (error: Error) => void }>();
  const next = (worker: ChildProcess) => new Promise<StampedeMessage>((resolve, reject) => waiters.set(worker, { resolve, reject }));
  const exited = new Map<ChildProcess, Promise<unknown>>();
  for (let w = 0; w < processes; w++) {
    const share = Math.floor(instances / processes) + (w < instances % processes ? 1 : 0);
    const task: StampedeTask = { databaseUrl, channel: CHANNEL, table: TABLE, rows, instances: share, applicationName, resync: config.resync };
    const worker = fork(WORKER, [], { env: { ...process.env, STAMPEDE_TASK: JSON.stringify(task) }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    worker.on('message', (message: StampedeMessage) => {
      if (message.type !== 'live') waiters.get(worker)?.resolve(message);
      else if (message.atNs >= faultNs) live.add(`${w}:${message.instance}`);
    });
    exited.set(
      worker,
      new Promise((resolve) =>
        worker.once('exit', (code) => {
          if (code !== 0) waiters.get(worker)?.reject(new Error(`stampede ${config.label}: worker ${w} exited with code ${code}`));
          resolve(code);
        }),
      ),
    );
    workers.push(worker);
  }
  await Promise.all(workers.map((worker) => next(worker)));

  const sampler = await ServerSampler.start(databaseUrl, cpu, { listen: '%-listener', slots: '%-listener-resync', pools: '%-pool' });
  const writer = startWriter(databaseUrl, rows);
  const startedNs = now();
  await sleep(SAMPLE_BEFORE_MS);
  const admin = new pg.Client({ connectionString: databaseUrl, application_name: 'stampede-admin' });
  await admin.connect();
  faultNs = now();
  const { rows: killed } = await admin.query<{ n: string }>(
    'SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity WHERE application_name = $1',
    [`${applicationName}-listener`],
  );
  await admin.end();
  for (const deadline = Date.now() + RECOVERY_TIMEOUT_MS; live.size < instances; await sleep(50)) {
    if (Date.now() > deadline) throw new Error(`stampede ${config.label}: ${live.size} of ${instances} instances live again after ${RECOVERY_TIMEOUT_MS} ms`);
  }
  await sleep(WRITE_AFTER_MS);
  const commits = await writer.stop();
  await sleep(SETTLE_MS);
  await sampler.stop();

  const reported = workers.map((worker) => next(worker));
  for (const worker of workers) worker.send({ type: 'report' });
  const messages = (await Promise.all(reported)) as Array<Extract<StampedeMessage, { type: 'report' }>>;
  const reports = messages.flatMap((message) => message.instances.map((instance) => ({ ...instance, stalls: message.stalls })));
  await Promise.all(exited.values());
  return summarize(config, { instances, processes, terminated: Number(killed[0]!.n), startedNs, faultNs, commits, sampler, reports });
}

/** How much of [from, to] the stretches cover (they do not overlap each other), in ns. */
function overlapNs(stretches: Array<[number, number]>, from: number, to: number): number {
  let total = 0;
  for (const [start, end] of stretches) total += Math.max(0, Math.min(end, to) - Math.max(start, from));
  return total;
}

function summarize(
  config: StampedeConfig,
  run: { instances: number; processes: number; terminated: number; startedNs: number; faultNs: number; commits: Commit[]; sampler: ServerSampler; reports: Array<InstanceReport & { stalls: Array<[number, number]> }> },
): StampedeResult {
  const { faultNs, reports, sampler } = run;
  const sinceFaultMs = (ns: number) => (ns - faultNs) / 1e6;
  const liveMs = reports.map((r) => sinceFaultMs(r.liveAtNs)).sort((a, b) => a - b);
  const notLive = reports.filter((r) => r.state !== 'live' || r.reloadStartNs < faultNs);
  if (notLive.length > 0) throw new Error(`stampede ${config.label}: ${notLive.length} instances not live, or not reloaded, after the fault`);
  const reloads = reports.map((r) => r.reloadMs).sort((a, b) => a - b);
  const lastLiveNs = Math.max(...reports.map((r) => r.liveAtNs));
  const commitMs = run.commits.filter((c) => c.sentNs >= faultNs && c.sentNs <= lastLiveNs).map((c) => c.ms).sort((a, b) => a - b);
  let heldMaxMs = 0;
  let liveMaxMs = 0;
  let late = 0;
  let applied = 0;
  for (const report of reports) {
    report.sentNs.forEach((sentNs, i) => {
      if (sentNs < faultNs) return;
      applied += 1;
      const delayMs = report.delayMs[i]!;
      if (sentNs < report.liveAtNs) heldMaxMs = Math.max(heldMaxMs, delayMs);
      else liveMaxMs = Math.max(liveMaxMs, delayMs);
      const fromNs = Math.max(sentNs, report.liveAtNs);
      const appliedNs = sentNs + delayMs * 1e6;
      if ((appliedNs - fromNs - overlapNs(report.stalls, fromNs, appliedNs)) / 1e6 > LATE_MS) late += 1;
    });
  }
  const stallMaxMs = Math.max(0, ...reports.flatMap((r) => r.stalls).filter(([from, to]) => to > faultNs && from < lastLiveNs).map(([from, to]) => (to - from) / 1e6));
  const peak = sampler.peakConnections(faultNs, lastLiveNs + 1e9);
  const cpuBefore = sampler.cpuSeconds(run.startedNs, faultNs);
  return {
    label: config.label,
    resync: config.resync,
    instances: run.instances,
    processes: run.processes,
    terminated: run.terminated,
    allLiveMs: liveMs.at(-1)!,
    medianLiveMs: liveMs[Math.floor(liveMs.length / 2)]!,
    reloadMedianMs: reloads[Math.floor(reloads.length / 2)]!,
    reloadMaxMs: reloads.at(-1)!,
    cpuBeforePercent: cpuBefore === null ? null : (cpuBefore / ((faultNs - run.startedNs) / 1e9)) * 100,
    peakCpuPercent: sampler.peakCpuPercent(faultNs, lastLiveNs + 1e9, CPU_WINDOW_MS),
    cpuSeconds: sampler.cpuSeconds(faultNs, lastLiveNs),
    connectionsBefore: sampler.peakConnections(run.startedNs, faultNs).connections,
    peakConnections: peak.connections,
    peakActive: peak.active,
    peakByRole: peak.roles,
    sent: run.commits.filter((c) => c.sentNs >= faultNs).length,
    commitMedianMs: commitMs[Math.floor(commitMs.length / 2)] ?? 0,
    commitMaxMs: commitMs.at(-1) ?? 0,
    applied,
    heldMaxMs,
    liveMaxMs,
    late,
    lost: reports.reduce((sum, r) => sum + r.stale, 0),
    stallMaxMs,
    reconnectedAgain: reports.filter((r) => r.reconnects > 1).length,
  };
}
