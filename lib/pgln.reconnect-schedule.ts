import type { Backoff } from './pgln.backoff.js';

/** A connection live for at least this long counts as stable: losing it, the first attempt is immediate. */
const STABLE_AFTER_MS = 1_000;

/**
 * When the LISTEN connection's next attempt runs. After a failed attempt, the backoff's delay for
 * the next step; after losing a connection that was stable, at once; after losing one that dropped
 * right after going live, the backoff goes on from where it was (a server that accepts and then
 * drops every connection gets no tight loop).
 */
export class ReconnectSchedule {
  /** Backoff step of the next attempt. */
  private step = 0;
  /** Attempts that failed since the connection was last live, for logs. */
  private failures = 0;
  /** When the connection last went live. */
  private liveSince = 0;
  private cancel?: () => void;

  constructor(
    private readonly backoff: Backoff,
    private readonly connect: () => void,
  ) {}

  /** The connection is live: the next loss counts from now, and failures from zero. */
  live(): void {
    this.liveSince = Date.now();
    this.failures = 0;
  }

  /**
   * Whether a connection lost now would be replaced at once (it was live, for long enough): a spare
   * may take over then, and only then, so that one dropped right after going live still backs off.
   */
  stable(wasLive: boolean): boolean {
    return wasLive && Date.now() - this.liveSince >= STABLE_AFTER_MS;
  }

  /** A live connection (or one still syncing, `wasLive` false) was lost: schedules the next attempt. */
  lost(wasLive: boolean): void {
    if (this.stable(wasLive)) this.step = 0;
    this.next();
  }

  /** An attempt failed: schedules the next one; returns its delay and how many attempts failed in a row, for the log line. */
  failed(): { delayMs: number; failures: number } {
    return { delayMs: this.next(), failures: ++this.failures };
  }

  /** Cancels a scheduled attempt (shutdown). */
  stop(): void {
    this.cancel?.();
  }

  /** Connects after the backoff's delay for the next step: returns that delay. */
  private next(): number {
    const delay = this.backoff.delay(this.step++);
    if (delay === 0) {
      // Immediate means now: even setImmediate would queue behind every other I/O callback.
      // (pg reports connection errors asynchronously, so this cannot recurse.)
      this.connect();
      return delay;
    }
    const timer = setTimeout(() => {
      this.cancel = undefined;
      this.connect();
    }, delay);
    this.cancel = () => clearTimeout(timer);
    return delay;
  }
}
