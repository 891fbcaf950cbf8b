import { PglnError } from './pgln.error.js';

/**
 * Reported to the notification handlers of a channel that has no out-of-sync handler when more
 * than `maxQueuedNotifications` were waiting and had to be dropped.
 */
export class PglnOverflowError extends PglnError {
  constructor(
    message: string,
    readonly channel: string,
    /** How many notifications were dropped. */
    readonly dropped: number,
  ) {
    super(message);
  }
}
