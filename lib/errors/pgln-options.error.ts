import { PglnError } from './pgln.error.js';

/** Module options that cannot work; the message lists every problem found. */
export class PglnOptionsError extends PglnError {}
