import { PglnError } from './pgln.error.js';

/** A notification or out-of-sync handler threw or rejected; `cause` holds what it threw. */
export class PglnHandlerError extends PglnError {
  constructor(
    message: string,
    /** The channel the handler was running for. */
    readonly channel: string,
    /** The handler, as `Class.method` (or `listen(channel)` for runtime listeners). */
    readonly handler: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}
