import pg from 'pg';
import type { Client, ClientConfig } from 'pg';
import { withTimeout } from './pgln.promises.js';

const noop = () => undefined;

/**
 * Drops a connection for good. `end()` alone waits for the server to close a connection that
 * runs no query, which a half-open socket never does: the socket is destroyed as well. A client
 * still connecting only has its socket destroyed, which fails its `connect()`: after `end()`, pg
 * would never settle it (and a pool's connect timer would run on).
 */
export function destroyConnection(client: Client): void {
  const internals = client as unknown as { _connecting?: boolean; connection?: { stream?: { destroy(): void } } };
  if (!internals._connecting) client.end().catch(noop);
  internals.connection?.stream?.destroy();
}

/**
 * SQLSTATE classes that mean the session is over, whatever the severity says: 08 (connection
 * exception) and 57P (operator intervention: terminated by an administrator, a shutdown, a crash).
 */
const SESSION_ENDED = /^(08|57P)/;

/**
 * Whether a query failed with an error response from the server after which its connection is
 * still usable (a bad statement, a full notification queue, ...). Not so for a connection that
 * failed or timed out, nor for a `FATAL` or `PANIC` (`pg_terminate_backend`, a fast shutdown, a
 * failover): the server closes the connection right after saying so, and a connection handed back
 * to a pool then dies idle, with an `'error'` nobody may be listening to.
 */
export function keepsConnection(error: unknown): boolean {
  const { severity, code } = (error ?? {}) as { severity?: unknown; code?: unknown };
  // Both are present on every error response. The severity is localized (lc_messages): its English
  // FATAL and PANIC are only a second hint, the SQLSTATE is what tells.
  if (typeof severity !== 'string' || typeof code !== 'string') return false;
  return !SESSION_ENDED.test(code) && severity !== 'FATAL' && severity !== 'PANIC';
}

/**
 * Sends one notification from a connection of its own, bounded by `timeoutMs` (connecting
 * included) and by `signal`: either destroys the connection at once, and the call rejects. The
 * connection never outlives the call.
 */
export async function notifyOnce(
  config: ClientConfig,
  channel: string,
  payload: string,
  timeoutMs: number,
  signal: AbortSignal,
  onTimeout: () => Error,
): Promise<void> {
  const client = new pg.Client(config);
  client.on('error', noop);
  let abort!: () => void;
  const aborted = new Promise<never>((_, reject) => (abort = () => reject(new Error('closed'))));
  signal.addEventListener('abort', abort);
  if (signal.aborted) abort();
  try {
    const sent = client.connect().then(() => client.query('SELECT pg_notify($1, $2)', [channel, payload]));
    await withTimeout(Promise.race([sent, aborted]), timeoutMs, onTimeout);
  } finally {
    signal.removeEventListener('abort', abort);
    destroyConnection(client);
  }
}
