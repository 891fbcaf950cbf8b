import type { Logger } from '@nestjs/common';
import { PglnConnectionError } from './errors/index.js';
import { describeError, isFatalAtStartup } from './pgln.connection-errors.js';
import { LISTENER_POOLED, PROBE_INCONCLUSIVE, STARTUP_FATAL, STARTUP_UNREACHABLE } from './pgln.messages.js';
import type { Session } from './pgln.transport.js';

/**
 * The listener's first connection, as `start()` (and so `app.init()`) waits for it: it succeeds
 * once the first connection is live, and fails when `startupTimeoutMs` passes without a LISTEN
 * (a new window after each loss: a slow out-of-sync handler does not count), or at once on an
 * error retrying cannot fix (a wrong password, an unknown database). Failing, it logs the error
 * and calls `abandon` (the listener closes).
 */
export class Startup {
  private pending?: { resolve: () => void; reject: (error: Error) => void };
  private timer?: NodeJS.Timeout;
  /** The last attempt's error, for the timeout's message. */
  private lastError?: unknown;
  /** Whether a probe proved something about the LISTEN sessions hearing other connections (see {@link checkReceives}). */
  receivesChecked = false;

  constructor(
    private readonly timeoutMs: number,
    /** How long the probe waits for its notification (`healthCheck.timeoutMs`), for its message. */
    private readonly probeTimeoutMs: number,
    /** Where the listener connects, for messages. */
    private readonly target: string,
    private readonly logger: Logger,
    private readonly abandon: (error: PglnConnectionError) => void,
  ) {}

  /** Whether the first connection is still awaited. */
  get starting(): boolean {
    return this.pending !== undefined;
  }

  /** Starts waiting: resolves once {@link live} is called, rejects when startup fails or {@link stop} is called first. */
  begin(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.pending = { resolve, reject };
      this.arm();
    });
  }

  /** LISTEN ran: the time limit no longer applies (handlers may take their time). */
  listening(): void {
    clearTimeout(this.timer);
  }

  /** The connection was lost while starting: a new window to get back. */
  lost(): void {
    if (this.pending) this.arm();
  }

  /** The first connection is live. */
  live(): void {
    clearTimeout(this.timer);
    this.pending?.resolve();
    this.pending = undefined;
  }

  /** An attempt failed with `error`: returns true if startup failed for it (an error retrying cannot fix). */
  attemptFailed(error: unknown): boolean {
    this.lastError = error;
    if (!this.pending || !isFatalAtStartup(error)) return false;
    this.fail(new PglnConnectionError(STARTUP_FATAL(this.target, describeError(error)), this.target, { cause: error }));
    return true;
  }

  /**
   * Checks, once, that the LISTEN session hears notifications sent from other connections: one
   * pointed at a pooler in transaction mode (PgBouncer's `pool_mode = transaction`) LISTENs
   * without error and never hears anything. That fails startup with a `PglnConnectionError`
   * saying how to fix it; a probe that cannot be sent (the pool is down, say) proves nothing and
   * is only logged. A session that is not `current()` any more when the probe ends proves nothing:
   * the next one checks again.
   */
  async checkReceives(session: Session, current: () => Session | undefined, signal: AbortSignal): Promise<void> {
    const verdict = await session.probe(signal);
    if (current() !== session) return;
    // Whatever it proved, no retry.
    this.receivesChecked = true;
    if (verdict.kind === 'inconclusive') return this.logger.warn(PROBE_INCONCLUSIVE(verdict.reason));
    if (verdict.kind === 'hears') return;
    const error = new PglnConnectionError(LISTENER_POOLED(this.target, this.probeTimeoutMs), this.target);
    // Starting: startup fails. (After startup, a probe runs only if the first ones proved nothing.)
    if (this.starting) this.fail(error);
    else this.logger.error(error.message);
  }

  /** Startup cannot succeed: rejects `begin()`'s promise with `error`, logs it, and abandons. */
  fail(error: PglnConnectionError): void {
    if (!this.pending) return;
    this.logger.error(error.message);
    this.stop(error);
    this.abandon(error);
  }

  /** Stops waiting (shutdown), rejecting with `error` if still starting. */
  stop(error: Error): void {
    clearTimeout(this.timer);
    this.pending?.reject(error);
    this.pending = undefined;
  }

  private arm(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      const reason = this.lastError ? describeError(this.lastError) : 'no answer';
      this.fail(new PglnConnectionError(STARTUP_UNREACHABLE(this.target, this.timeoutMs, reason), this.target, { cause: this.lastError }));
    }, this.timeoutMs);
  }
}
