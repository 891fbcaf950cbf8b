import { PglnError } from './pgln.error.js';

/**
 * A channel name PostgreSQL would reject or silently truncate (empty, over 63 bytes, NUL, not a
 * string), or one the server refused to LISTEN on (a character the database's encoding lacks, say;
 * `cause` is the server's error).
 */
export class PglnChannelError extends PglnError {
  constructor(
    message: string,
    /** The rejected channel name (as given). */
    readonly channel: unknown,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}
