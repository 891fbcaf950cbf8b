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
    `late ${r.late}, lost ${r.lost}; worker event loop blocked up to ${r.eventLoopMaxMs.toFixed(0)} ms; reconnected again ${r.reconnectedAgain}`
  );
}

/** The "Resync stampede" section of FANOUT.md. */
export function stampedeSection(results: StampedeResult[], rows: number): string[] {
  const { instances, processes } = results[0]!;
  return [
    '## Resync stampede',
    '',
    `${instances} instances (${processes} processes), each caching a table of ${thousands(rows)} rows \`(id int, version int)\`: its`,
    '`@OnOutOfSync` handler reads every row into memory (on its own pool), its `@OnNotification` handler applies one',
    `row's new version. A writer updates a random row and notifies its new version, ${WRITES_PER_SECOND} commits a second, throughout.`,
    'The fault: every LISTEN backend of the fleet terminated at once (`pg_terminate_backend`), as a server restart or',
    'a failover does to the connections, without the restart\'s own seconds. Measured from the fault:',
    '',
    '- **all live**: until the last instance was live again (reconnected, reloaded, delivering); **half**: the median;',
    `- **peak CPU**: the server's (every PostgreSQL process, from /proc), the most over any ${CPU_WINDOW_MS} ms until all were live, % of a core;`,
    '  **CPU s**: its CPU seconds from the fault until all were live;',
    '- **connections**: client backends in `pg_stat_activity` (read every 100 ms), before the fault and at most after it;',
    '  **running**: the most of them running a query at once (the reloads);',
    '- **held**: the longest a notification sent before its instance was live again waited (held through the reload);',
    `- **late**: notifications sent once their instance was live again and applied more than ${LATE_MS} ms after;`,
    '- **lost**: cached rows that differ from the table once the writer stopped and everything settled, summed over instances.',
    '',
    '| resync | all live (s) | half (s) | reload median / max (ms) | peak CPU (% of a core) | CPU s | connections before → peak | running | held, max (s) | late | lost |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ...results.map(
      (r) =>
        `| ${r.label} | ${seconds(r.allLiveMs)} | ${seconds(r.medianLiveMs)} | ${r.reloadMedianMs.toFixed(0)} / ${r.reloadMaxMs.toFixed(0)} | ` +
        `${percent(r.peakCpuPercent)} | ${r.cpuSeconds === null ? 'n/a' : r.cpuSeconds.toFixed(1)} | ${r.connectionsBefore} → ${r.peakConnections} | ${r.peakActive} | ` +
        `${seconds(r.heldMaxMs)} | ${r.late} | ${r.lost} |`,
    ),
    '',
  ];
}
