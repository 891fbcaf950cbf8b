import { PglnError } from './pgln.error.js';

/** The listener was closed (application shutdown) before the operation could complete. */
export class PglnClosedError extends PglnError {}
