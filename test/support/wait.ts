/** What a truthy value of type T can be. */
type Truthy<T> = Exclude<T, false | 0 | '' | null | undefined>;

/**
 * Resolves once `condition` returns a truthy value (it may be async); fails with `what` after
 * `timeoutMs`. Polls: for conditions that no event announces (rows in pg_stat_activity, ...).
 */
export async function waitFor<T>(
  what: string,
  condition: () => T | Promise<T>,
  { timeoutMs = 10_000, intervalMs = 10 } = {},
): Promise<Truthy<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await condition();
      if (value) return value as Truthy<T>;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) {
      throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/** A promise with its resolve function exposed, for handlers a test wants to hold or observe. */
export function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/**
 * Collects values and lets a test wait until a count is reached: `await inbox.next(3)`.
 */
export class Inbox<T> {
  readonly items: T[] = [];
  private waiters: { count: number; resolve: () => void }[] = [];

  push = (item: T): void => {
    this.items.push(item);
    this.waiters = this.waiters.filter((waiter) => {
      if (this.items.length < waiter.count) return true;
      waiter.resolve();
      return false;
    });
  };

  /** Resolves when at least `count` items have arrived; rejects after `timeoutMs`. */
  async until(count: number, timeoutMs = 10_000): Promise<T[]> {
    if (this.items.length < count) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise<void>((resolve) => this.waiters.push({ count, resolve })),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`Timed out after ${timeoutMs} ms: ${this.items.length} of ${count} items arrived`)),
            timeoutMs,
          );
        }),
      ]).finally(() => clearTimeout(timer));
    }
    return this.items;
  }
}

/**
 * Records every state a service goes through (from `state$`), so a test can wait for a
 * transition however briefly the state lasted: `await states.reach('reconnecting', 1)`.
 */
export class StateLog {
  readonly states: string[] = [];
  private readonly inbox = new Inbox<string>();
  private readonly subscription: { unsubscribe(): void };

  constructor(pgln: { state$: { subscribe(next: (change: { state: string }) => void): { unsubscribe(): void } } }) {
    this.subscription = pgln.state$.subscribe((change) => {
      this.states.push(change.state);
      this.inbox.push(change.state);
    });
  }

  /** How many times `state` was entered (the current state at subscription counts once). */
  count(state: string): number {
    return this.states.filter((s) => s === state).length;
  }

  /** Resolves once `state` has been entered `times` times in all. */
  async reach(state: string, times = 1, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.count(state) < times) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`Timed out: "${state}" entered ${this.count(state)} of ${times} times; states: ${this.states.join(' > ')}`);
      await this.inbox.until(this.states.length + 1, left).catch(() => undefined);
    }
  }

  stop(): void {
    this.subscription.unsubscribe();
  }
}
