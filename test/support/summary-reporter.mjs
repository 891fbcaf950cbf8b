// @ts-check
/**
 * Ends the run with a plain `N passed, N failed` line. Jest always runs its own summary reporter
 * last, synchronously, so the line waits one turn of the event loop to come after it.
 *
 * In CI (`CI` set), a run that skipped any test fails: a suite that cannot run here (no PgBouncer,
 * no browser) says why and skips on a developer's machine, but CI must run every case the README
 * claims.
 */
export default class SummaryReporter {
  /** @type {Error | undefined} */
  error;

  /** @param {unknown} _contexts @param {{ numPassedTests: number, numFailedTests: number, numPendingTests: number, numTodoTests: number }} results */
  onRunComplete(_contexts, results) {
    const skipped = results.numPendingTests + results.numTodoTests;
    const counts = `${results.numPassedTests} passed, ${results.numFailedTests} failed${skipped ? `, ${skipped} skipped` : ''}`;
    if (skipped > 0 && process.env.CI && process.env.CI !== 'false') {
      this.error = new Error(`${skipped} test(s) skipped; in CI every case must run (the lines above say why each suite skipped)`);
    }
    setImmediate(() => process.stdout.write(`${counts}\n${this.error ? `CI: ${this.error.message}\n` : ''}`));
  }

  /** Jest fails the run when a reporter has an error. */
  getLastError() {
    return this.error;
  }
}
