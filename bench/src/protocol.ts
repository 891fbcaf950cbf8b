/** Messages between the orchestrator (main.ts) and a receiver process (receiver.ts), over IPC. */

/**
 * The libraries measured; `pgln-sync` / `pgln-async` differ only in their handler, `pgln-spare` is
 * `pgln-sync` with `listener: { spare: true }` (scenario 4). The
 * `pgln-telemetry-off` / `pgln-otel-*` variants of `pgln-sync` measure what OpenTelemetry costs:
 * switched off (the API never loaded, as in an app without it), and with an SDK registered.
 */
export type Contender =
  | 'raw-pg'
  | 'pg-listen'
  | 'postgres.js'
  | 'pgln-sync'
  | 'pgln-spare'
  | 'pgln-async'
  | 'pgln-baseline'
  | 'pgln-telemetry-off'
  | 'pgln-otel-metrics'
  | 'pgln-otel';

export const CONTENDERS: Contender[] = ['raw-pg', 'pg-listen', 'postgres.js', 'pgln-sync', 'pgln-async'];

/**
 * Scenario 6: nestjs-pgln (sync handler) as it was before telemetry existed (`pgln-baseline`, built
 * from {@link BASELINE_REVISION}), then without and with OpenTelemetry, back to back.
 */
export const TELEMETRY_CONTENDERS: Contender[] = ['pgln-baseline', 'pgln-telemetry-off', 'pgln-sync', 'pgln-otel-metrics', 'pgln-otel'];

/** The last commit before OpenTelemetry, stats counters and named instances. */
export const BASELINE_REVISION = 'decbf60';

/** What a receiver is asked to do, through its environment. */
export interface ReceiverTask {
  contender: Contender;
  /** `count`: time the arrival of `expected` notifications; `latency`: record send-to-handler times; `recovery`: report probes; `memory`: heap before and after. */
  mode: 'count' | 'latency' | 'recovery' | 'memory';
  channels: string[];
  expected: number;
  /** `count`: notifications handled before timing starts, so that every contender is measured with its code optimized. */
  warmup?: number;
  databaseUrl: string;
  applicationName: string;
  /** For `pgln-baseline`: the file URL of that build's entry point. */
  baseline?: string;
}

export type ReceiverMessage =
  | { type: 'ready' }
  | { type: 'counted'; elapsedNs: number; cpuUs: number }
  | { type: 'latency'; p50Us: number; p99Us: number; maxUs: number; received: number }
  | { type: 'probe'; payload: string; atNs: number }
  | { type: 'memory'; heapBefore: number; heapAfter: number; rssBefore: number; rssAfter: number };

/** Time on the machine's monotonic clock, in ns: comparable across processes on one machine. */
export const now = (): number => Number(process.hrtime.bigint());
