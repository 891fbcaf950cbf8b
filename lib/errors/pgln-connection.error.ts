import { PglnError } from './pgln.error.js';

/**
 * The LISTEN connection could not be established at startup: an error that retrying cannot fix
 * (authentication, unknown database), or a server still unreachable after `startupTimeoutMs`.
 * The message names the target as `user@host:port/database`, never the password.
 */
export class PglnConnectionError extends PglnError {
  constructor(
    message: string,
    /** The connection target, without password. */
    readonly target: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}
