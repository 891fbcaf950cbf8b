import type { Logger } from '@nestjs/common';
import type { PglnHealthCheckOptions } from './interfaces/index.js';
import { CHANNELS_MISSING } from './pgln.messages.js';
import { QueueUsage } from './pgln.queue-usage.js';
import type { Session } from './pgln.transport.js';

/** What the health check needs of the listener: its session now, the channels it wants, and how to report a session lost. */
export interface HealthCheckTarget {
  /** The connected session, if any: a check of another one (replaced meanwhile) stops. */
  readonly session: Session | undefined;
  /** Whether the listener still wants a channel (one unlistened meanwhile is not missing). */
  wants(name: string): boolean;
  /** The channels it wants now. */
  channels(): string[];
  /** The session did not answer in time, or lost a channel: it must be replaced. */
  lost(session: Session, error: Error): void;
}

/**
 * The liveness check of a LISTEN session, besides TCP keepalive: every `intervalMs` it asks the
 * session for `pg_listening_channels()` and the notification queue's usage in one round trip. No
 * answer within the session's timeout, or a wanted channel missing, and the session is reported
 * lost. Its last round trip and queue reading are kept for `stats()`.
 */
export class HealthCheck {
  /** When the last check answered, and how long it took. */
  last?: { at: Date; roundTripMs: number };
  readonly queueUsage: QueueUsage;
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly options: Required<PglnHealthCheckOptions>,
    logger: Logger,
    private readonly target: HealthCheckTarget,
  ) {
    this.queueUsage = new QueueUsage(options.queueUsageWarning, logger);
  }

  /** Checks `session` every `intervalMs` from now on, until it is replaced or {@link stop} is called. */
  watch(session: Session): void {
    this.stop();
    this.timer = setTimeout(() => void this.check(session), this.options.intervalMs);
  }

  stop(): void {
    clearTimeout(this.timer);
  }

  private async check(session: Session): Promise<void> {
    if (session !== this.target.session) return;
    const expected = this.target.channels();
    const started = Date.now();
    try {
      const { channels: held, queueUsage } = await session.health();
      this.last = { at: new Date(), roundTripMs: Date.now() - started };
      this.queueUsage.observe(queueUsage);
      const missing = expected.filter((name) => !held.has(name) && this.target.wants(name));
      if (missing.length > 0) throw new Error(CHANNELS_MISSING(missing));
    } catch (error) {
      this.target.lost(session, error as Error);
      return;
    }
    if (session === this.target.session) this.watch(session);
  }
}
