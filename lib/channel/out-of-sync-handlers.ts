import type { OutOfSyncEvent, OutOfSyncReason, PglnExecutor } from '../interfaces/index.js';
import type { SubscriptionSpec } from '../pgln.subscription.js';
import type { ChannelContext } from './channel-context.js';
import type { HandlerRun } from './handler-run.js';
import type { Reporting } from './reporting.js';
import { describeError } from '../pgln.connection-errors.js';
import { readSnapshot, type Snapshot } from './snapshot.js';

const noop = () => undefined;

/** An out-of-sync handler's registration. */
export type OutOfSyncSpec = SubscriptionSpec & Required<Pick<SubscriptionSpec, 'onOutOfSync'>>;

/** What a read produced: the snapshot its handlers recorded, the earliest if several did. */
export interface ReadResult {
  readonly snapshot?: Snapshot;
}

/** What the last completed out-of-sync run was, for stats. */
export interface LastResync {
  readonly handler: string;
  readonly reason: OutOfSyncReason;
  readonly at: Date;
  readonly durationMs: number;
}

/**
 * A subscriber's out-of-sync handlers (a provider may have several on a channel): run one after
 * another, each retried with backoff until it succeeds, its channel's notifications held for the
 * subscriber meanwhile. The event lets a handler record the snapshot of the transaction it reads in
 * (`event.snapshot(executor)`); only a successful attempt's counts.
 */
export class OutOfSyncHandlers {
  constructor(
    private readonly specs: readonly OutOfSyncSpec[],
    private readonly channel: string,
    private readonly context: ChannelContext,
    private readonly reporting: Reporting,
    /** Told about each run that completed. */
    private readonly completed: (run: LastResync) => void,
  ) {}

  get length(): number {
    return this.specs.length;
  }

  /**
   * What a run waits for before it begins (`resync` options): a jitter after a reconnect, a slot of
   * the fleet's. Resolves with what to call when the run is done, or undefined if `removed` aborts
   * first. A slot that cannot be had (the slots unreachable for `holdMs`, shutdown) is logged, and
   * the run goes on without one rather than never.
   */
  async enter(reason: OutOfSyncReason, removed: AbortSignal): Promise<(() => void) | undefined> {
    const { gate, logger } = this.context;
    // Without out-of-sync handlers there is nothing to run, and nothing to load the server with.
    if (!gate || this.specs.length === 0) return noop;
    try {
      return await gate.enter(reason, removed);
    } catch (error) {
      if (removed.aborted) return undefined;
      logger.warn(`Out-of-sync handlers of ${this.channel} run without a resync slot: ${describeError(error)}`);
      return noop;
    }
  }

  /**
   * Runs every handler for `reason`. Resolves with what the read produced once all have succeeded,
   * or undefined as soon as `removed` aborts (a handler running then finishes on its own).
   */
  async run(reason: OutOfSyncReason, removed: AbortSignal, running: HandlerRun): Promise<ReadResult | undefined> {
    // The earliest snapshot: whatever it saw, every later read of the run saw too.
    let snapshot: Snapshot | undefined;
    for (const spec of this.specs) {
      const recorded = await this.runOne(spec, reason, removed, running);
      if (!recorded) return undefined;
      snapshot ??= recorded.snapshot;
    }
    return { snapshot };
  }

  /** One handler, until it succeeds (with what it recorded) or the subscriber is removed. */
  private async runOne(spec: OutOfSyncSpec, reason: OutOfSyncReason, removed: AbortSignal, running: HandlerRun): Promise<ReadResult | undefined> {
    for (let attempt = 1; ; attempt++) {
      if (removed.aborted) return undefined;
      let snapshot: Snapshot | undefined;
      const event: OutOfSyncEvent = {
        channel: this.channel,
        reason,
        snapshot: async (executor: PglnExecutor) => {
          const read = await readSnapshot(executor);
          snapshot ??= read;
        },
      };
      running.start(spec.name);
      const startedAt = Date.now();
      try {
        const { telemetry } = this.context;
        await (telemetry ? telemetry.outOfSync(spec, event) : spec.onOutOfSync(event));
        this.reporting.countResync(reason);
        this.completed({ handler: spec.name, reason, at: new Date(), durationMs: Date.now() - startedAt });
        return removed.aborted ? undefined : { snapshot };
      } catch (error) {
        this.reporting.failed(spec.name, spec.onError, error, 'out-of-sync handler; notifications stay held and it is retried');
      } finally {
        running.finish({ name: this.channel, context: this.context });
      }
      try {
        await this.context.backoff.wait(attempt, removed);
      } catch {
        return undefined; // removed while waiting
      }
    }
  }
}
