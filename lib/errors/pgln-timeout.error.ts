import { PglnError } from './pgln.error.js';

/**
 * PostgreSQL did not answer in time: `notify` rejects with it after `notifyTimeoutMs`. On the LISTEN
 * connection it is what the health check, LISTEN or UNLISTEN met before the connection was replaced.
 */
export class PglnTimeoutError extends PglnError {}
