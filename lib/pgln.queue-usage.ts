import type { Logger } from '@nestjs/common';
import { QUEUE_USAGE_HIGH, QUEUE_USAGE_OK } from './pgln.messages.js';

/**
 * Watches how full PostgreSQL's notification queue is, as the health check reads it. The queue is
 * shared by the whole cluster and cannot be truncated past the slowest listener; when it is full,
 * every NOTIFY fails. One warning when the usage crosses the threshold, one line when it is back
 * below: no log storm while it stays high.
 */
export class QueueUsage {
  /** The last reading, 0 to 1; undefined before the first health check. */
  last?: number;
  private high = false;

  constructor(
    private readonly threshold: number,
    private readonly logger: Logger,
  ) {}

  observe(usage: number): void {
    this.last = usage;
    const high = usage >= this.threshold;
    if (high === this.high) return;
    this.high = high;
    if (high) this.logger.warn(QUEUE_USAGE_HIGH(usage, this.threshold));
    else this.logger.log(QUEUE_USAGE_OK(usage, this.threshold));
  }
}
