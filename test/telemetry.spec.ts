import { Injectable } from '@nestjs/common';
import { SpanKind, SpanStatusCode, context, metrics, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import {
  AggregationTemporality,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
  type DataPoint,
  type Histogram,
} from '@opentelemetry/sdk-metrics';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { OnNotification, OnOutOfSync, type OutOfSyncEvent } from '../lib/index.js';
import { loadTelemetry } from '../lib/pgln.telemetry.js';
import { createTestApp } from './support/app.js';
import { adminPool, terminate, unique } from './support/database.js';
import { Inbox, waitFor } from './support/wait.js';

const admin = adminPool();
afterAll(() => admin.end());

/** The channel of the test in progress: the SDK keeps metrics across tests, by channel. */
let channel = '';
/** Trace ids of the spans this test's handlers started. */
let lookups = new Inbox<string>();
beforeEach(() => {
  channel = unique('traced');
  lookups = new Inbox<string>();
});

/** A provider with both handlers on this test's channel. */
function traced() {
  @Injectable()
  class Traced {
    readonly seen = new Inbox<string>();
    @OnNotification(channel)
    async onEvent(payload: string) {
      await new Promise((resolve) => setImmediate(resolve));
      // The handler's own work, after an await, is a child of the delivery's span.
      trace.getTracer('app').startActiveSpan('lookup', (span) => {
        lookups.push(span.spanContext().traceId);
        span.end();
      });
      if (payload === 'boom') throw new TypeError('cannot apply boom');
      if (payload === 'slow') await new Promise((resolve) => setTimeout(resolve, 30));
      if (payload === 'odd') throw 'not an Error';
      this.seen.push(payload);
    }
    @OnOutOfSync(channel)
    reload(_event: OutOfSyncEvent) {}
  }
  return Traced;
}

function send(payloads: string[]) {
  return admin.query(`SELECT ${payloads.map((_, i) => `pg_notify($1, $${i + 2})`).join(', ')}`, [channel, ...payloads]);
}

describe('OpenTelemetry', () => {
  it('creates no telemetry without an SDK, so the channels have none to call', async () => {
    const stats = () => {
      throw new Error('not read');
    };
    expect(await loadTelemetry('default', { traces: true, metrics: true }, stats)).toBeUndefined();
  });

  describe('with the SDK registered before the application', () => {
    const spans = new InMemorySpanExporter();
    const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spans)] });
    const reader = new PeriodicExportingMetricReader({
      exporter: new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE),
      exportIntervalMillis: 3_600_000,
    });
    const meterProvider = new MeterProvider({ readers: [reader] });

    beforeAll(() => {
      context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
      trace.setGlobalTracerProvider(tracerProvider);
      metrics.setGlobalMeterProvider(meterProvider);
    });
    afterAll(async () => {
      await Promise.all([tracerProvider.shutdown(), meterProvider.shutdown()]);
      trace.disable();
      metrics.disable();
      context.disable();
    });

    /** Every data point of a metric, for this test's channel (or instance-wide ones). */
    async function points<T = number>(name: string): Promise<DataPoint<T>[]> {
      const { resourceMetrics } = await reader.collect();
      const metric = resourceMetrics.scopeMetrics
        .filter((scope) => scope.scope.name === 'nestjs-pgln')
        .flatMap((scope) => scope.metrics)
        .find((candidate) => candidate.descriptor.name === name);
      return ((metric?.dataPoints ?? []) as DataPoint<T>[]).filter((point) =>
        [undefined, channel].includes(point.attributes['messaging.destination.name'] as string | undefined),
      );
    }
    const value = async (name: string, attributes: Record<string, unknown> = {}) =>
      (await points(name)).find((point) => Object.entries(attributes).every(([key, v]) => point.attributes[key] === v))?.value;

    it('traces each handler call as a consumer span, with the handler, the reason and the outcome', async () => {
      const Traced = traced();
      const t = await createTestApp({ providers: [Traced] });
      try {
        await send(['a', 'boom', 'b', 'odd']);
        await t.get(Traced).seen.until(2);
        await lookups.until(4);
        const finished = () => spans.getFinishedSpans().filter((span) => span.attributes['messaging.destination.name'] === channel);
        await waitFor('four process spans', () => finished().filter((span) => span.name === `process ${channel}`).length === 4);

        const [resync] = finished().filter((span) => span.name === `resync ${channel}`);
        expect(resync).toMatchObject({
          kind: SpanKind.CONSUMER,
          status: { code: SpanStatusCode.UNSET },
          attributes: {
            'messaging.system': 'postgresql',
            'messaging.operation.name': 'resync',
            'pgln.handler': 'Traced.reload',
            'pgln.out_of_sync.reason': 'connect',
            'pgln.connection': 'default',
          },
        });
        const processed = finished().filter((span) => span.name === `process ${channel}`);
        for (const span of processed) {
          expect(span).toMatchObject({
            kind: SpanKind.CONSUMER,
            attributes: {
              'messaging.system': 'postgresql',
              'messaging.operation.type': 'process',
              'messaging.operation.name': 'process',
              'messaging.destination.name': channel,
              'messaging.message.body.size': expect.any(Number),
              'pgln.handler': 'Traced.onEvent',
              'pgln.notification.sender_pid': expect.any(Number),
            },
          });
          // A root span: not a child of whatever ran when the socket delivered the data.
          expect(span.parentSpanContext).toBeUndefined();
        }
        const failed = processed.filter((span) => span.status.code === SpanStatusCode.ERROR);
        expect(failed.map((span) => [span.status.message, span.attributes['error.type'], span.events.map((event) => event.name)])).toEqual([
          ['cannot apply boom', 'TypeError', ['exception']],
          // A thrown value that is not an Error: the conventions' fallback type, and no invented exception.
          ['not an Error', '_OTHER', []],
        ]);

        // Each `lookup` span the handler started is a child of its delivery's span.
        const children = spans.getFinishedSpans().filter((span) => span.name === 'lookup' && lookups.items.includes(span.spanContext().traceId));
        expect(children).toHaveLength(4);
        for (const child of children) {
          const parent = processed.find((span: ReadableSpan) => span.spanContext().spanId === child.parentSpanContext?.spanId);
          expect(parent?.spanContext().traceId).toBe(child.spanContext().traceId);
        }
      } finally {
        await t.app.close();
      }
    });

    it('reports counters, gauges and durations that match stats()', async () => {
      const Traced = traced();
      const t = await createTestApp({ providers: [Traced] });
      try {
        await send(['c', 'boom', 'slow']);
        await t.get(Traced).seen.until(2);
        await terminate(admin, `${t.appName}-listener`);
        await waitFor('the reconnect', () => t.pgln.stats().reconnects === 1 && t.pgln.state === 'live');

        expect(await value('pgln.notifications.received')).toBe(3);
        expect(await value('pgln.notifications.delivered')).toBe(2);
        expect(await value('pgln.handler.failures')).toBe(1);
        expect(await value('pgln.notifications.dropped')).toBe(0);
        expect(await value('pgln.queue.depth')).toBe(0);
        expect(await value('pgln.resyncs', { 'pgln.out_of_sync.reason': 'connect' })).toBe(1);
        expect(await value('pgln.resyncs', { 'pgln.out_of_sync.reason': 'reconnect' })).toBe(1);
        expect(await value('pgln.reconnects', { 'pgln.connection': 'default' })).toBe(1);
        expect(await value('pgln.listener.live')).toBe(1);
        const stats = t.pgln.stats().channels[channel]!;
        expect(stats).toMatchObject({ received: 3, delivered: 2, handlerFailures: 1 });

        const durations = await points<Histogram>('messaging.process.duration');
        const counts = (list: DataPoint<Histogram>[], key: string) => Object.fromEntries(list.map((point) => [String(point.attributes[key]), point.value.count]));
        expect(counts(durations, 'error.type')).toEqual({ TypeError: 1, undefined: 2 });
        expect(durations[0]!.attributes).toMatchObject({ 'pgln.handler': 'Traced.onEvent', 'pgln.connection': 'default' });
        // Seconds, in the conventions' buckets. The 'slow' handler waited 30 ms: at least 0.025 s recorded
        // (in milliseconds it would be at least 25).
        expect(durations[0]!.value.buckets.boundaries.slice(0, 3)).toEqual([0.005, 0.01, 0.025]);
        const longest = Math.max(...durations.map((point) => point.value.max ?? 0));
        expect(longest).toBeGreaterThanOrEqual(0.025);
        expect(longest).toBeLessThan(25);
        const resyncs = await points<Histogram>('pgln.resync.duration');
        expect(counts(resyncs, 'pgln.out_of_sync.reason')).toEqual({ connect: 1, reconnect: 1 });
      } finally {
        await t.app.close();
      }
    });

    it('keeps the metrics and makes no spans with telemetry: { traces: false }', async () => {
      const quiet = unique('quiet');
      const seen = new Inbox<string>();
      const t = await createTestApp({}, { telemetry: { traces: false } });
      try {
        await t.pgln.listen(quiet, { onNotification: seen.push });
        await t.pgln.notify(quiet, 'x');
        await seen.until(1);
        expect(spans.getFinishedSpans().filter((span) => span.attributes['messaging.destination.name'] === quiet)).toEqual([]);
        const { resourceMetrics } = await reader.collect();
        const received = resourceMetrics.scopeMetrics
          .flatMap((scope) => scope.metrics)
          .find((metric) => metric.descriptor.name === 'pgln.notifications.received')!
          .dataPoints.find((point) => point.attributes['messaging.destination.name'] === quiet);
        expect(received?.value).toBe(1);
      } finally {
        await t.app.close();
      }
      expect(await loadTelemetry('default', { traces: false, metrics: false }, () => t.pgln.stats())).toBeUndefined();
    });
  });
});
