/**
 * Records the timers (and intervals) created from now on, until `stop()`, and which of them are
 * still pending: nothing may outlive `app.close()`. The module and pg run in this test's context,
 * so they use these globals.
 */
export function trackTimers() {
  const pending = new Map<unknown, string>();
  const real = { setTimeout, clearTimeout, setInterval, clearInterval };
  const describe = (fn: unknown) => String(fn).replace(/\s+/g, ' ').slice(0, 160);
  globalThis.setTimeout = ((fn: (...args: unknown[]) => void, ms?: number, ...args: unknown[]) => {
    const timer = real.setTimeout(() => {
      pending.delete(timer);
      fn(...args);
    }, ms);
    pending.set(timer, describe(fn));
    return timer;
  }) as typeof setTimeout;
  globalThis.setInterval = ((fn: (...args: unknown[]) => void, ms?: number, ...args: unknown[]) => {
    const timer = real.setInterval(fn, ms, ...args);
    pending.set(timer, describe(fn));
    return timer;
  }) as typeof setInterval;
  globalThis.clearTimeout = ((timer?: NodeJS.Timeout) => {
    pending.delete(timer);
    real.clearTimeout(timer);
  }) as typeof clearTimeout;
  globalThis.clearInterval = ((timer?: NodeJS.Timeout) => {
    pending.delete(timer);
    real.clearInterval(timer);
  }) as typeof clearInterval;
  return {
    /** Callbacks of the timers still pending. */
    pending: () => [...pending.values()],
    stop: () => Object.assign(globalThis, real),
  };
}
