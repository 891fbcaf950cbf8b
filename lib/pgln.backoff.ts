import { sleep } from './pgln.promises.js';
import type { PglnBackoffOptions } from './interfaces/index.js';

/**
 * Exponential backoff with full jitter: attempt 0 is immediate, attempt n (n >= 1) waits a
 * random time below min(maxDelayMs, initialDelayMs * 2^(n-1)).
 */
export class Backoff {
  constructor(
    private readonly options: Required<PglnBackoffOptions>,
    private readonly random: () => number = Math.random,
  ) {}

  /** The delay, in ms, before attempt number `attempt` (0-based). */
  delay(attempt: number): number {
    if (attempt <= 0) return 0;
    const cap = Math.min(this.options.maxDelayMs, this.options.initialDelayMs * 2 ** Math.min(attempt - 1, 30));
    return Math.floor(this.random() * cap);
  }

  /** Waits before attempt number `attempt`; rejects with `signal`'s reason as soon as it aborts (see {@link sleep}). */
  wait(attempt: number, signal: AbortSignal): Promise<void> {
    return sleep(this.delay(attempt), signal);
  }
}
