/**
 * Exactly-once channels (`defineChannel(name, { exactlyOnce: true })`): each notification carries
 * the id of the transaction that sent it, so that a subscriber whose reload recorded its snapshot
 * can skip what that reload already saw. The server wraps the payload, in the sending statement:
 *
 *   {"$x" : "<pg_current_xact_id()>", "$p" : <payload>}
 *
 * (json_build_object's own spacing), so the id is the sending transaction's, whatever connection
 * or ORM runs the statement, and it costs no round trip.
 */

/** The envelope around the JSON payload text `payload` (an SQL expression), as an SQL expression. */
export const envelope = (payload: string): string =>
  `json_build_object('$x', pg_current_xact_id()::text, '$p', (${payload})::json)::text`;

/**
 * Bytes the envelope adds to a payload at most: `{"$x" : "` (9), an xid8 of up to 20 digits,
 * `", "$p" : ` (10) and `}` (1). They count against pg_notify's limit.
 */
export const ENVELOPE_BYTES = 40;

/** A received payload of an exactly-once channel: the sender's transaction id, when it came in the envelope. */
export interface Unwrapped {
  readonly xid?: bigint;
  readonly payload: unknown;
}

const XID = /^\d+$/;

/**
 * The transaction id and payload of a parsed envelope; a payload without one (sent by a foreign
 * sender, or before the channel was exactly-once) is returned as it is.
 */
export function unwrap(parsed: unknown): Unwrapped {
  if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) {
    const { $x: xid, $p: payload } = parsed as { $x?: unknown; $p?: unknown };
    if (typeof xid === 'string' && XID.test(xid) && '$p' in parsed && Object.keys(parsed).length === 2) {
      return { xid: BigInt(xid), payload };
    }
  }
  return { payload: parsed };
}

/** The transaction id of a raw payload of an exactly-once channel, if it has one (and is JSON at all). */
export function transactionOf(payload: string): bigint | undefined {
  if (!payload.startsWith('{"$x"')) return undefined;
  try {
    return unwrap(JSON.parse(payload)).xid;
  } catch {
    return undefined;
  }
}
