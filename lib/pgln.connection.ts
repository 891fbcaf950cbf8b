import type { Client } from 'pg';

const noop = () => undefined;

/**
 * Drops a connection for good. `end()` alone waits for the server to close a connection that
 * runs no query, which a half-open socket never does: the socket is destroyed as well.
 */
export function destroyConnection(client: Client): void {
  client.end().catch(noop);
  (client as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
}

/**
 * Whether a query failed with an error response from the server (pg's `DatabaseError`: a bad
 * statement, a full notification queue, ...), as opposed to a connection that failed or timed out.
 * Whether the session outlived it (not after a `FATAL`) is for pg-pool to tell on release.
 */
export function isServerError(error: unknown): boolean {
  const { severity, code } = (error ?? {}) as { severity?: unknown; code?: unknown };
  // The severity is localized (lc_messages): its presence tells, not its text.
  return typeof severity === 'string' && typeof code === 'string';
}
