import { PglnOptionsError } from './errors/index.js';
import { OPTIONS_INVALID } from './pgln.messages.js';

/** The longest delay a Node.js timer honours (2^31 - 1 ms); a longer one fires after 1 ms. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** A value as an options error shows it: strings quoted, the rest as they print. */
export function describe(value: unknown): string {
  return typeof value === 'string' ? JSON.stringify(value) : String(value);
}

/** Collects every problem of the options, to report them all at once. */
export class OptionChecks {
  private readonly problems: string[] = [];

  check(ok: boolean, problem: string): void {
    if (!ok) this.problems.push(problem);
  }

  /** A time in ms: a whole timer's worth (>= 1, or >= 0 where 0 turns it off), and one Node.js can wait. */
  duration(name: string, value: unknown, min: 0 | 1 = 1, belowOne = 'timers count whole milliseconds'): void {
    const ok = typeof value === 'number' && (min === 0 ? value >= 0 : value > 0);
    this.check(ok, `${name} must be a number ${min === 0 ? '>= 0' : '> 0'} (ms), got ${describe(value)}`);
    this.check(!ok || min === 0 || (value as number) >= 1, `${name} must be at least 1 (ms), got ${describe(value)}: ${belowOne}`);
    // Node.js runs a timer of a longer delay after 1 ms.
    this.check(!ok || (value as number) <= MAX_TIMER_MS, `${name} must be at most ${MAX_TIMER_MS} ms (about 24.8 days, the longest timer Node.js keeps), got ${describe(value)}`);
  }

  /** Throws a {@link PglnOptionsError} listing every problem found, if any. */
  throwIfAny(): void {
    if (this.problems.length > 0) throw new PglnOptionsError(OPTIONS_INVALID(this.problems));
  }
}

/**
 * `value` without its keys whose value is `undefined`: an option given as `undefined` (a config
 * value that is not set, say) takes its default, as if it were not given. Spread over the
 * defaults, it would replace them with `undefined`, which pg reads as "no timeout". A pool (an
 * object with `query()`) is kept as it is.
 */
export function defined<T extends object>(value: T | undefined): T {
  if (!value || typeof value !== 'object' || typeof (value as { query?: unknown }).query === 'function') return value as T;
  return Object.fromEntries(Object.entries(value).filter(([, entry]) => entry !== undefined)) as T;
}
