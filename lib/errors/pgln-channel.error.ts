import { PglnError } from './pgln.error.js';

/** A channel name PostgreSQL would reject or silently truncate (empty, over 63 bytes, NUL, not a string). */
export class PglnChannelError extends PglnError {
  constructor(
    message: string,
    /** The rejected channel name (as given). */
    readonly channel: unknown,
  ) {
    super(message);
  }
}
