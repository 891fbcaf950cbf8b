import { PglnError } from './pgln.error.js';

/**
 * Reported to the handlers of a channel when a notification's large payload (`largePayloads`)
 * could not be fetched: its row was gone (deleted after `retentionMs` while the instance was
 * behind) or the fetch failed. The notification is not delivered; a channel with an out-of-sync
 * handler reads again (reason `'overflow'`) to cover it.
 */
export class PglnPayloadLostError extends PglnError {
  constructor(
    message: string,
    readonly channel: string,
    /** The id of the payload's row, as the (first) notification named it. */
    readonly reference: string,
    /** How many notifications in a row were not delivered (their payloads lost). */
    readonly lost: number,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}
