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
 * Whether a query failed with an error the server sent on a session that remains usable
 * (severity `ERROR`: a bad statement, a full notification queue, ...), as opposed to a
 * connection that failed, timed out or was closed by the server (`FATAL`, `PANIC`).
 */
export function isServerError(error: unknown): boolean {
  return (error as { severity?: unknown } | null)?.severity === 'ERROR';
}
