import { PglnError } from './pgln.error.js';

/** A query on the LISTEN connection got no answer in time; the connection is replaced. */
export class PglnTimeoutError extends PglnError {}
