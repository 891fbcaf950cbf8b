import type { Logger } from '@nestjs/common';
import { SLOW_HANDLER, SLOW_HANDLER_DONE } from '../pgln.messages.js';

/**
 * The handler a subscriber is running, if any, for slow-handler warnings. No clock is read per call,
 * which would cost about as much as the rest of an async delivery: the watchdog stamps a run when it
 * first sees it, so warnings come between `slowHandlerMs` and a watchdog tick (`slowHandlerMs / 4`)
 * later, and times are that much short.
 */
export class HandlerRun {
  private name?: string;
  /** When the watchdog first saw it running (0 until then). */
  private since = 0;
  private warned = false;

  start(name: string): void {
    this.name = name;
    this.since = 0;
    this.warned = false;
  }

  /** It finished: one more line if it was reported slow. */
  finish(channel: { readonly name: string; readonly context: { readonly logger: Logger } }): void {
    if (this.warned) channel.context.logger.warn(SLOW_HANDLER_DONE(this.name!, channel.name, Date.now() - this.since));
    this.name = undefined;
  }

  /** Logs it, once, when it has been running for `thresholdMs` or more. */
  check(now: number, thresholdMs: number, logger: Logger, channel: string): void {
    if (this.name === undefined || this.warned) return;
    if (this.since === 0) this.since = now;
    if (now - this.since < thresholdMs) return;
    this.warned = true;
    logger.warn(SLOW_HANDLER(this.name, channel, now - this.since, thresholdMs));
  }
}
