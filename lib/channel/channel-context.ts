import type { Logger } from '@nestjs/common';
import type { PglnBackoffOptions } from '../interfaces/index.js';
import { Backoff } from '../pgln.backoff.js';
import { Counts } from '../pgln.counts.js';
import { SLOW_SYNC_HANDLERS } from '../pgln.messages.js';
import type { Telemetry } from '../pgln.telemetry.js';
import type { ResyncGate } from '../pgln.resync-gate.js';
import { TurnTimer } from '../pgln.turn-timer.js';

/** What the listener tells it about subscribers that fell behind and caught up (see {@link ChannelContext.behind}). */
export interface SyncWatch {
  /** `subscriber` is out of sync: a read is due or runs. */
  behind(subscriber: object): void;
  /** `subscriber` is in sync again (or gone). */
  caughtUp(subscriber: object): void;
}

/** What the channels of one instance share with the listener that owns them. */
export interface ChannelContext {
  readonly logger: Logger;
  /** Paces the retries of a failing out-of-sync handler. */
  readonly backoff: Backoff;
  /** The most notifications one subscriber may have waiting. */
  readonly maxQueuedNotifications: number;
  /** Reports synchronous handlers that block the event loop (see {@link TurnTimer}). */
  readonly turns: TurnTimer;
  /** Spans and duration histograms, once loaded and only when an OpenTelemetry SDK is there. */
  telemetry?: Telemetry;
  /** The instance's counts, every channel's included, even after it is dropped. */
  readonly totals: Counts;
  /**
   * Subscribers that were in sync (or must be before bootstrap ends) and are not: the listener is
   * live only while there is none.
   */
  readonly sync: SyncWatch;
  /** Channel names whose upper-case hint was logged: once per name and instance. */
  readonly caseHinted: Set<string>;
  /** What an out-of-sync run waits for before its handlers (`resync` options), if anything. */
  readonly gate?: ResyncGate;
  /** Where references to large payloads are fetched (`largePayloads`), if anywhere. */
  readonly payloads?: { fetch(reference: string, channel: string): Promise<string> };
}

/** The context of one instance's channels, from its options; `sync` hears who falls behind and catches up. */
export function createChannelContext(
  options: { readonly backoff: Required<PglnBackoffOptions>; readonly maxQueuedNotifications: number; readonly slowHandlerMs: number },
  logger: Logger,
  sync: SyncWatch,
  gate?: ResyncGate,
  payloads?: ChannelContext['payloads'],
): ChannelContext {
  const { slowHandlerMs } = options;
  return {
    logger,
    backoff: new Backoff(options.backoff),
    maxQueuedNotifications: options.maxQueuedNotifications,
    totals: new Counts(),
    turns: new TurnTimer(slowHandlerMs, (elapsed, handlers) => logger.warn(SLOW_SYNC_HANDLERS(handlers, elapsed, slowHandlerMs))),
    caseHinted: new Set(),
    sync,
    gate,
    payloads,
  };
}
