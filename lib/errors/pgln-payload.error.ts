import { PglnError } from './pgln.error.js';

/**
 * A payload that cannot be sent (8000 bytes or more, a NUL, not JSON-encodable) or, for a
 * `json: true` handler, a received payload that is not valid JSON.
 */
export class PglnPayloadError extends PglnError {
  constructor(
    message: string,
    /** The channel the payload was meant for or arrived on. */
    readonly channel: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}
