// @ts-check
/**
 * Ends the run with a plain `N passed, N failed` line. Jest always runs its own summary reporter
 * last, synchronously, so the line waits one turn of the event loop to come after it.
 */
export default class SummaryReporter {
  /** @param {unknown} _contexts @param {{ numPassedTests: number, numFailedTests: number, numPendingTests: number }} results */
  onRunComplete(_contexts, results) {
    const skipped = results.numPendingTests ? `, ${results.numPendingTests} skipped` : '';
    setImmediate(() => process.stdout.write(`${results.numPassedTests} passed, ${results.numFailedTests} failed${skipped}\n`));
  }
}
