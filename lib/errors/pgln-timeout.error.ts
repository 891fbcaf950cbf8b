import { PglnError } from './pgln.error.js';

/** Internal: a query on the LISTEN connection got no answer in time; the connection is replaced (its message is logged). */
export class PglnTimeoutError extends PglnError {}
