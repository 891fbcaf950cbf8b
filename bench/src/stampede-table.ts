import { cpus } from 'node:os';
import { thousands } from './stats.js';
import { CPU_WINDOW_MS, LATE_MS, WRITES_PER_SECOND, type StampedeResult } from './stampede.js';

const seconds = (ms: number) => (ms / 1000).toFixed(1);
const percent = (value: number | null) => (value === null ? 'n/a' : value.toFixed(0));

/** One line for the console. */
export function stampedeLine(r: StampedeResult): string {
  return (
    `stampede ${r.label}: ${r.terminated} LISTEN backends terminated; all live again in ${seconds(r.allLiveMs)} s (half in ${seconds(r.medianLiveMs)} s); ` +
    `reload median ${r.reloadMedianMs.toFixed(0)} ms, max ${r.reloadMaxMs.toFixed(0)} ms; server CPU ${percent(r.cpuBeforePercent)}% before, peak ${percent(r.peakCpuPercent)}%, ` +
    `${r.cpuSeconds === null ? 'n/a' : r.cpuSeconds.toFixed(1)} CPU s; connections ${r.connectionsBefore} before, peak ${r.peakConnections} (${r.peakActive} running a query; ${Object.entries(r.peakByRole).map(([k, v]) => `${k} ${v}`).join(', ')}); ` +
    `${r.sent} notifications sent (commit median ${r.commitMedianMs.toFixed(0)} ms, max ${r.commitMaxMs.toFixed(0)} ms), ${thousands(r.applied)} applied, held up to ${seconds(r.heldMaxMs)} s, once live up to ${r.liveMaxMs.toFixed(0)} ms; ` +
    `late ${r.late}, lost ${r.lost}; worker processes stalled up to ${r.stallMaxMs.toFixed(0)} ms; reconnected again ${r.reconnectedAgain}`
  );
}

/** The "Resync stampede" section of FANOUT.md. */
export function stampedeSection(results: StampedeResult[], rows: number): string[] {
  const { instances, processes } = results[0]!;
  const stallMaxMs = Math.max(...results.map((r) => r.stallMaxMs));
  return [
    '## Resync stampede',
    '',
    `${instances} instances (${processes} processes), each caching a table of ${thousands(rows)} rows \`(id int, version int)\`: its`,
    '`@OnOutOfSync` handler reads every row into memory (`SELECT id, version FROM ...` on its own pool of one',
    "connection), its `@OnNotification` handler applies one row's new version. A writer updates a random row and",
    `notifies its new version, ${WRITES_PER_SECOND} commits a second, throughout. The fault: every LISTEN backend of the fleet`,
    'terminated at once (`pg_terminate_backend`), which is what a server restart or a failover does to the connections,',
    "without the restart's own seconds. Every instance of a fleet has the same `applicationName`, so they share slots.",
    'Measured from the fault:',
    '',
    '- **all live**: until the last instance was live again (reconnected, reloaded, delivering); **half**: the median;',
    '- **reload**: how long the reloads after the fault took (the query and building the cache), median / longest;',
    `- **peak CPU**: the server's (every PostgreSQL process, from /proc every 100 ms), the most over any ${CPU_WINDOW_MS} ms until`,
    '  all were live, % of one core; **CPU s**: its CPU seconds from the fault until all were live;',
    '- **connections**: client backends in `pg_stat_activity` (every 100 ms), before the fault → at most after it;',
    '  **queries running at once**: the most of them running a query in one reading;',
    "- **writer's commit**: the longest the writer's UPDATE + NOTIFY took meanwhile (the rest of the application);",
    '- **held**: the longest a notification sent before its instance was live again waited (held through its reload; one that arrived while its instance waited for a slot is covered by the reload, not applied);',
    `- **late**: notifications applied more than ${LATE_MS} ms after they could have been (after being sent and their instance`,
    '  being live again), not counting time their worker process did not run at all;',
    '- **lost**: cached rows that differ from the table once the writer stopped and everything settled, over all instances.',
    '',
    "| resync | all live (s) | half (s) | reload median / max (s) | server peak CPU (% of a core) | server CPU s | connections before → peak | queries running at once | writer's commit, max (ms) | held, max (s) | late | lost |",
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ...results.map(
      (r) =>
        `| ${r.label || 'none'} | ${seconds(r.allLiveMs)} | ${seconds(r.medianLiveMs)} | ${seconds(r.reloadMedianMs)} / ${seconds(r.reloadMaxMs)} | ` +
        `${percent(r.peakCpuPercent)} | ${r.cpuSeconds === null ? 'n/a' : r.cpuSeconds.toFixed(1)} | ${r.connectionsBefore} → ${r.peakConnections} | ${r.peakActive} | ` +
        `${r.commitMaxMs.toFixed(0)} | ${seconds(r.heldMaxMs)} | ${r.late} | ${r.lost} |`,
    ),
    '',
    `The instances share ${processes} processes and, with the server, ${cpus().length} cores: a reload parses`,
    `${thousands(rows)} rows on its process's event loop, which delays the other instances of that process (stalls of up to`,
    `${seconds(stallMaxMs)} s here); in a fleet of separate machines that CPU is not shared. Connections: one LISTEN connection per`,
    'instance; a reload takes a pool connection (closed again after 1 s idle here); with `concurrency`, each instance also',
    'holds a slot connection (opened at its first resync, kept while used, closed by the server after `holdMs` idle).',
    '',
  ];
}
