import type { ClientConfig } from 'pg';
import { PglnTimeoutError } from './errors/index.js';
import { notifyOnce } from './pgln.connection.js';
import { describeError } from './pgln.connection-errors.js';
import { NO_ANSWER } from './pgln.messages.js';
import type { ListenSession } from './pgln.session.js';

/** What a probe proved: the session hears others, it does not (a transaction-mode pooler), or nothing. */
export type ProbeVerdict = { readonly kind: 'hears' } | { readonly kind: 'deaf' } | { readonly kind: 'inconclusive'; readonly reason: string };

/**
 * Checks that a LISTEN session hears notifications sent from other connections: one pointed at a
 * pooler in transaction mode (PgBouncer's `pool_mode = transaction`) LISTENs without error and never
 * hears anything. The probe is sent from a connection of its own with the listener's settings (the
 * same database and server), named apart so that pg_stat_activity never shows two listeners. Its
 * connection ends within `timeoutMs`, or as soon as `signal` aborts (shutdown).
 */
export async function probeReceives(
  session: Pick<ListenSession, 'receivesFromOthers'>,
  listener: ClientConfig,
  timeoutMs: number,
  signal: AbortSignal,
): Promise<ProbeVerdict> {
  const probe = { ...listener, application_name: `${listener.application_name}-probe` };
  try {
    const hears = await session.receivesFromOthers((channel, payload) =>
      notifyOnce(probe, channel, payload, timeoutMs, signal, () => new PglnTimeoutError(NO_ANSWER('The probe notification', timeoutMs))),
    );
    return { kind: hears ? 'hears' : 'deaf' };
  } catch (error) {
    return { kind: 'inconclusive', reason: describeError(error) };
  }
}
