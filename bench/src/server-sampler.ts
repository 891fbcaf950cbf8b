import pg from 'pg';
import { now } from './protocol.js';
import { cpuBetween, type ServerCpu } from './server-cpu.js';

/** One reading: CPU seconds the server used so far (summed over readings), and its client connections. */
interface Sample {
  atNs: number;
  cpuSeconds?: number;
  connections?: number;
  /** Of those, the ones running a query (not counting the sampler's own). */
  active?: number;
  /** Of those, the ones of each role (by `application_name`). */
  roles?: Record<string, number>;
}

/** What the connections were at most: all, running a query, and of each role. */
export interface PeakConnections {
  connections: number;
  active: number;
  roles: Record<string, number>;
}

/**
 * Reads a server's load every `periodMs` while running: its CPU from /proc (when the server is
 * local, see {@link ServerCpu}) and its client connections from `pg_stat_activity`, on a connection
 * of its own. A connections query still running when the next is due is not doubled.
 */
export class ServerSampler {
  private readonly samples: Sample[] = [];
  private timer?: NodeJS.Timeout;
  private asking = false;
  private lastCpu?: Map<string, number>;
  private cpuTotal = 0;

  private constructor(
    private readonly client: pg.Client,
    private readonly cpu: ServerCpu | undefined,
    private readonly roles: Record<string, string>,
  ) {}

  /** Connects and starts reading; `roles` counts connections apart by `application_name LIKE` pattern. */
  static async start(databaseUrl: string, cpu: ServerCpu | undefined, roles: Record<string, string> = {}, periodMs = 100): Promise<ServerSampler> {
    const client = new pg.Client({ connectionString: databaseUrl, application_name: 'bench-sampler' });
    client.on('error', () => undefined);
    await client.connect();
    const sampler = new ServerSampler(client, cpu, roles);
    sampler.lastCpu = cpu?.seconds();
    sampler.timer = setInterval(() => sampler.read(), periodMs);
    return sampler;
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.client.end();
  }

  /** CPU seconds the server used between two times (ns), or null without CPU readings. */
  cpuSeconds(fromNs: number, toNs: number): number | null {
    const cpu = this.samples.filter((s) => s.cpuSeconds !== undefined && s.atNs >= fromNs && s.atNs <= toNs);
    return cpu.length < 2 ? null : cpu.at(-1)!.cpuSeconds! - cpu[0]!.cpuSeconds!;
  }

  /** The most CPU the server used over any `windowMs` between two times, as % of one core; null without CPU readings. */
  peakCpuPercent(fromNs: number, toNs: number, windowMs: number): number | null {
    const cpu = this.samples.filter((s) => s.cpuSeconds !== undefined && s.atNs >= fromNs && s.atNs <= toNs);
    let peak: number | null = null;
    let start = 0;
    for (const end of cpu) {
      while (start + 1 < cpu.length && cpu[start + 1]!.atNs <= end.atNs - windowMs * 1e6) start += 1;
      const spanNs = end.atNs - cpu[start]!.atNs;
      if (spanNs < windowMs * 1e6 * 0.8) continue;
      peak = Math.max(peak ?? 0, ((end.cpuSeconds! - cpu[start]!.cpuSeconds!) / (spanNs / 1e9)) * 100);
    }
    return peak;
  }

  /** The most connections read between two times; separately, the most running a query, and of each role. */
  peakConnections(fromNs: number, toNs: number): PeakConnections {
    const read = this.samples.filter((s) => s.connections !== undefined && s.atNs >= fromNs && s.atNs <= toNs);
    const most = (value: (sample: Sample) => number) => Math.max(0, ...read.map(value));
    const roles = Object.fromEntries(Object.keys(this.roles).map((role) => [role, most((s) => s.roles![role]!)]));
    return { connections: most((s) => s.connections!), active: most((s) => s.active!), roles };
  }

  private read(): void {
    if (this.cpu) {
      const seconds = this.cpu.seconds();
      this.cpuTotal += cpuBetween(this.lastCpu, seconds) ?? 0;
      this.lastCpu = seconds;
      this.samples.push({ atNs: now(), cpuSeconds: this.cpuTotal });
    }
    if (this.asking) return;
    this.asking = true;
    const names = Object.keys(this.roles);
    const roles = names.map((_, i) => `, count(*) FILTER (WHERE application_name LIKE $${i + 1}) AS r${i}`).join('');
    this.client
      .query<Record<string, string>>(
        `SELECT count(*) AS connections, count(*) FILTER (WHERE state = 'active') AS active${roles} FROM pg_stat_activity ` +
          "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
        Object.values(this.roles),
      )
      .then(({ rows: [row] }) =>
        this.samples.push({
          atNs: now(),
          connections: Number(row!.connections),
          active: Number(row!.active),
          roles: Object.fromEntries(names.map((name, i) => [name, Number(row![`r${i}`])])),
        }),
      )
      .catch(() => undefined)
      .finally(() => (this.asking = false));
  }
}
