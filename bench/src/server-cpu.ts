import { readdirSync, readFileSync } from 'node:fs';

/** USER_HZ on Linux: /proc reports CPU time in these ticks. */
const TICKS_PER_SECOND = 100;

/** Fields of /proc/<pid>/stat after the command name: [0] state, [1] ppid, [11] utime, [12] stime. */
const stat = (pid: string) => readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');

/**
 * CPU time of a local PostgreSQL server (its postmaster and every child), read from /proc: only on
 * Linux, and only for a server this machine runs (the embedded one), found by its port.
 */
export class ServerCpu {
  private constructor(private readonly postmaster: string) {}

  /** The server listening on `port`, or undefined (not Linux, or not found). */
  static of(port: number | undefined): ServerCpu | undefined {
    if (port === undefined || process.platform !== 'linux') return undefined;
    for (const pid of readdirSync('/proc').filter((name) => /^\d+$/.test(name))) {
      try {
        if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(`-p\0${port}\0`)) return new ServerCpu(pid);
      } catch {
        // gone meanwhile
      }
    }
    return undefined;
  }

  /** CPU seconds used so far by each process of the server, by pid. */
  seconds(): Map<string, number> {
    const seconds = new Map<string, number>();
    for (const pid of readdirSync('/proc').filter((name) => /^\d+$/.test(name))) {
      try {
        const fields = stat(pid);
        if (pid !== this.postmaster && fields[1] !== this.postmaster) continue;
        seconds.set(pid, (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND); // utime + stime
      } catch {
        // gone meanwhile
      }
    }
    return seconds;
  }
}

/**
 * CPU the server used between two readings: each process's growth (one that started meanwhile
 * counts whole). A process that exited meanwhile is not counted, so this errs low, never negative.
 */
export function cpuBetween(before: Map<string, number> | undefined, after: Map<string, number> | undefined): number | undefined {
  if (!before || !after) return undefined;
  let total = 0;
  for (const [pid, seconds] of after) total += Math.max(0, seconds - (before.get(pid) ?? 0));
  return total;
}
