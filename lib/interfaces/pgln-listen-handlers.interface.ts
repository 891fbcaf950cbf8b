import type { PglnHandlerError, PglnOverflowError, PglnPayloadError, PglnPayloadLostError } from '../errors/index.js';
import type { OutOfSyncEvent, PglnNotification } from './pgln-notification.interface.js';

/** Handlers given to `PglnService.listen()`. Any of them may return a promise; it is awaited. */
export interface PglnListenHandlers<TPayload = unknown> {
  /**
   * Called for each notification on the channel, one at a time and in arrival order.
   * `payload` is the raw text, or the parsed value when `json` is true.
   */
  onNotification?: (payload: TPayload, notification: PglnNotification) => unknown;
  /**
   * Called to rebuild state from the database: once when listening starts (reason `'listen'`),
   * after every reconnect (`'reconnect'`), an overflow of this listener's queue (`'overflow'`) and
   * `resync()` (`'manual'`). This listener's notifications are held until it resolves (those that
   * arrived before it began are not delivered after it); if it throws it is retried with backoff.
   */
  onOutOfSync?: (event: OutOfSyncEvent) => unknown;
  /**
   * Told (besides the log) when one of the two handlers above fails (`PglnHandlerError`), when a
   * payload is not valid JSON under `json: true` (`PglnPayloadError`; that notification is
   * skipped), and when notifications were dropped on overflow with no `onOutOfSync` to recover
   * (`PglnOverflowError`), and when a large payload could not be fetched (`PglnPayloadLostError`,
   * with `largePayloads`; `onOutOfSync`, if given, runs to cover it). Handlers are called as methods of the object given to `listen()`.
   */
  onError?: (error: PglnHandlerError | PglnOverflowError | PglnPayloadError | PglnPayloadLostError) => void;
  /**
   * Parse each payload as JSON before calling `onNotification`. A payload that is not valid
   * JSON is reported as an error and skipped.
   * @default false
   */
  json?: boolean;
}
