import type {
  Attributes,
  BatchObservableCallback,
  Context,
  ContextAPI,
  Histogram,
  Meter,
  Span,
  TraceAPI,
  Tracer,
} from '@opentelemetry/api';
import type { OutOfSyncEvent, PglnNotification, PglnStats } from './interfaces/index.js';
import { isPromiseLike } from './pgln.promises.js';
import type { SubscriptionSpec } from './pgln.subscription.js';

/** The instrumentation scope of every span and metric. */
const SCOPE = 'nestjs-pgln';
/** `messaging.system`: PostgreSQL has no registered value in the conventions. */
const SYSTEM = 'postgresql';
/** Histogram buckets for durations in seconds: the conventions' advice for `messaging.process.duration`. */
const SECONDS_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10];

/** Which signals to produce when an OpenTelemetry SDK is registered. */
export interface TelemetrySwitches {
  readonly traces: boolean;
  readonly metrics: boolean;
}

/**
 * OpenTelemetry for one instance: a consumer span per handler call (following the messaging
 * conventions: `process <channel>` and `resync <channel>`), handler and resync duration
 * histograms, and observable instruments that read {@link PglnStats} when the SDK collects.
 *
 * Only created when `@opentelemetry/api` is installed *and* an SDK registered a tracer or meter
 * provider before the application bootstrapped (see {@link loadTelemetry}); otherwise the channels
 * have none and their hot path does not change.
 */
export class Telemetry {
  constructor(
    private readonly api: {
      readonly context: ContextAPI;
      readonly trace: TraceAPI;
      readonly root: Context;
      readonly consumer: number;
      readonly error: number;
    },
    private readonly connection: string,
    private readonly tracer: Tracer | undefined,
    private readonly processDuration: Histogram | undefined,
    private readonly resyncDuration: Histogram | undefined,
    /** Stops the observable instruments reading this instance's stats. */
    readonly close: () => void = () => undefined,
  ) {}

  /** Calls a notification handler in a `process <channel>` span, timing it. */
  notification(channel: string, spec: SubscriptionSpec, payload: unknown, notification: PglnNotification): unknown {
    const attributes: Attributes = {
      'messaging.system': SYSTEM,
      'messaging.operation.type': 'process',
      'messaging.operation.name': 'process',
      'messaging.destination.name': channel,
      'pgln.handler': spec.name,
      'pgln.connection': this.connection,
    };
    const span = this.tracer?.startSpan(
      `process ${channel}`,
      {
        kind: this.api.consumer,
        attributes: {
          ...attributes,
          'messaging.message.body.size': Buffer.byteLength(notification.payload),
          'pgln.notification.sender_pid': notification.processId,
        },
      },
      this.api.root,
    );
    return this.run(span, this.processDuration, attributes, spec.onNotification!, payload, notification);
  }

  /** Calls an out-of-sync handler in a `resync <channel>` span, timing it. */
  outOfSync(spec: SubscriptionSpec, event: OutOfSyncEvent): unknown {
    const attributes: Attributes = {
      'messaging.system': SYSTEM,
      'messaging.destination.name': event.channel,
      'pgln.handler': spec.name,
      'pgln.connection': this.connection,
      'pgln.out_of_sync.reason': event.reason,
    };
    const span = this.tracer?.startSpan(
      `resync ${event.channel}`,
      { kind: this.api.consumer, attributes: { ...attributes, 'messaging.operation.type': 'process', 'messaging.operation.name': 'resync' } },
      this.api.root,
    );
    return this.run(span, this.resyncDuration, attributes, spec.onOutOfSync!, event);
  }

  /** Calls `handler` with the span active (its own queries become children), ending both on settle. */
  private run<A extends unknown[]>(
    span: Span | undefined,
    histogram: Histogram | undefined,
    attributes: Attributes,
    handler: (...args: A) => unknown,
    ...args: A
  ): unknown {
    const started = performance.now();
    const end = (failed: boolean, error?: unknown) => {
      if (histogram) {
        const recorded = failed ? { ...attributes, 'error.type': errorType(error) } : attributes;
        histogram.record((performance.now() - started) / 1000, recorded);
      }
      if (!span) return;
      if (failed) {
        span.setAttribute('error.type', errorType(error));
        if (error instanceof Error) span.recordException(error);
        span.setStatus({ code: this.api.error, message: error instanceof Error ? error.message : String(error) });
      }
      span.end();
    };
    let result: unknown;
    try {
      result = span
        ? this.api.context.with(this.api.trace.setSpan(this.api.root, span), handler, undefined, ...args)
        : handler(...args);
    } catch (error) {
      end(true, error);
      throw error;
    }
    if (!isPromiseLike(result)) {
      end(false);
      return result;
    }
    return Promise.resolve(result).then(
      (value) => {
        end(false);
        return value;
      },
      (error: unknown) => {
        end(true, error);
        throw error;
      },
    );
  }
}

/** `error.type`: the error's class, or `_OTHER` for a thrown value that is not an Error (the conventions' fallback). */
function errorType(error: unknown): string {
  return error instanceof Error ? error.constructor.name : '_OTHER';
}

/**
 * Telemetry for one instance, or undefined when there is nothing to report to: `@opentelemetry/api`
 * is not installed (it is an optional peer dependency), or no SDK registered a provider yet (the
 * SDK must be started before the Nest application is created, as OpenTelemetry requires anyway),
 * or both signals are switched off. Observable instruments read `stats` when the SDK collects.
 */
export async function loadTelemetry(
  connection: string,
  switches: TelemetrySwitches,
  stats: () => PglnStats,
): Promise<Telemetry | undefined> {
  if (!switches.traces && !switches.metrics) return undefined;
  let api: typeof import('@opentelemetry/api');
  try {
    // Not bundled: resolved at run time, where it may be missing.
    api = await import(/* webpackIgnore: true */ '@opentelemetry/api');
  } catch {
    return undefined;
  }
  const { trace, metrics, context, ProxyTracerProvider, createNoopMeter, SpanKind, SpanStatusCode, ROOT_CONTEXT, ValueType } = api;
  const provider = trace.getTracerProvider();
  const tracing =
    switches.traces && (!(provider instanceof ProxyTracerProvider) || provider.getDelegateTracer(SCOPE) !== undefined);
  const meter = switches.metrics ? metrics.getMeter(SCOPE) : undefined;
  const metered = meter !== undefined && !(meter instanceof createNoopMeter().constructor);
  if (!tracing && !metered) return undefined;

  let processDuration: Histogram | undefined;
  let resyncDuration: Histogram | undefined;
  let close: (() => void) | undefined;
  if (metered) {
    // In seconds, as the conventions say: the SDK's default buckets are made for milliseconds.
    const advice = { explicitBucketBoundaries: SECONDS_BUCKETS };
    processDuration = meter.createHistogram('messaging.process.duration', {
      description: 'Duration of notification handler calls',
      unit: 's',
      advice,
    });
    resyncDuration = meter.createHistogram('pgln.resync.duration', {
      description: 'Duration of out-of-sync handler runs',
      unit: 's',
      advice,
    });
    close = observe(meter, connection, stats, ValueType.INT);
  }
  return new Telemetry(
    { context, trace, root: ROOT_CONTEXT, consumer: SpanKind.CONSUMER, error: SpanStatusCode.ERROR },
    connection,
    tracing ? trace.getTracer(SCOPE) : undefined,
    processDuration,
    resyncDuration,
    close,
  );
}

/** The counters and gauges, observed from one stats snapshot per collection; returns what stops them. */
function observe(meter: Meter, connection: string, stats: () => PglnStats, valueType: number): () => void {
  const counter = (name: string, unit: string, description: string) =>
    meter.createObservableCounter(name, { unit, description, valueType });
  const gauge = (name: string, unit: string, description: string) => meter.createObservableGauge(name, { unit, description });
  const received = counter('pgln.notifications.received', '{notification}', 'Notifications that arrived');
  const delivered = counter('pgln.notifications.delivered', '{call}', 'Notification handler calls that completed');
  const failures = counter('pgln.handler.failures', '{call}', 'Handler calls that threw or rejected');
  const invalid = counter('pgln.notifications.invalid', '{notification}', 'Payloads rejected (not JSON, or failing the schema), per handler');
  const dropped = counter('pgln.notifications.dropped', '{notification}', 'Notifications dropped on queue overflow');
  const resyncs = counter('pgln.resyncs', '{run}', 'Out-of-sync handler runs that completed, by reason');
  const reconnects = counter('pgln.reconnects', '{reconnect}', 'Times the LISTEN connection came back after a loss');
  const depth = gauge('pgln.queue.depth', '{notification}', 'Notifications waiting on a channel');
  const live = gauge('pgln.listener.live', '1', '1 while the listener is live (every channel in sync), else 0');
  const usage = gauge('pgln.notification_queue.usage', '1', "PostgreSQL's notification queue usage at the last health check");
  const instruments = [received, delivered, failures, invalid, dropped, resyncs, reconnects, depth, live, usage];
  const callback: BatchObservableCallback = (result) => {
    const snapshot = stats();
    const instance = { 'pgln.connection': connection };
    result.observe(reconnects, snapshot.reconnects, instance);
    result.observe(live, snapshot.state === 'live' ? 1 : 0, instance);
    if (snapshot.notificationQueueUsage !== undefined) result.observe(usage, snapshot.notificationQueueUsage, instance);
    for (const [channel, figures] of Object.entries(snapshot.channels)) {
      const attributes = { ...instance, 'messaging.system': SYSTEM, 'messaging.destination.name': channel };
      result.observe(received, figures.received, attributes);
      result.observe(delivered, figures.delivered, attributes);
      result.observe(failures, figures.handlerFailures, attributes);
      result.observe(invalid, figures.invalidPayloads, attributes);
      result.observe(dropped, figures.dropped, attributes);
      result.observe(depth, figures.queued, attributes);
      for (const [reason, count] of Object.entries(figures.resyncs)) {
        result.observe(resyncs, count, { ...attributes, 'pgln.out_of_sync.reason': reason });
      }
    }
  };
  meter.addBatchObservableCallback(callback, instruments);
  return () => meter.removeBatchObservableCallback(callback, instruments);
}
