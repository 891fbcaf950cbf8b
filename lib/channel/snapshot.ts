import { PglnError } from '../errors/index.js';
import type { PglnExecutor } from '../interfaces/index.js';
import { SNAPSHOT_UNREADABLE } from '../pgln.messages.js';

/**
 * A PostgreSQL snapshot, as `pg_current_snapshot()` gives it: which transactions' effects a read
 * saw. Transaction ids are xid8 (64 bits, never wrapping), compared as `BigInt`.
 */
export interface Snapshot {
  /** Every transaction below it had ended when the snapshot was taken. */
  readonly xmin: bigint;
  /** No transaction from it on had ended. */
  readonly xmax: bigint;
  /** Between the two, those still in progress. */
  readonly inProgress: ReadonlySet<bigint>;
}

const SNAPSHOT = /^(\d+):(\d+):([\d,]*)$/;

/** Parses `xmin:xmax:xip,xip,...` (the list may be empty: `"100:105:"`). */
export function parseSnapshot(text: string): Snapshot | undefined {
  const match = SNAPSHOT.exec(text.trim());
  if (!match) return undefined;
  const inProgress = new Set(match[3]!.split(',').filter((xid) => xid !== '').map((xid) => BigInt(xid)));
  return { xmin: BigInt(match[1]!), xmax: BigInt(match[2]!), inProgress };
}

/**
 * Whether the effects of the (committed) transaction `xid` are in `snapshot`, as
 * `pg_visible_in_snapshot()` says: it ended before the snapshot was taken.
 */
export function visibleIn(xid: bigint, snapshot: Snapshot): boolean {
  return xid < snapshot.xmin || (xid < snapshot.xmax && !snapshot.inProgress.has(xid));
}

export const SNAPSHOT_SQL = 'SELECT pg_current_snapshot()::text AS snapshot';

/**
 * Reads the snapshot of the transaction `executor` runs in. It accepts what `notify`'s executor
 * does, and the results ORMs return: pg's `{ rows }`, a rows array (TypeORM, Prisma's
 * `$queryRawUnsafe`, MikroORM), or `[rows, count]`.
 *
 * @throws PglnError when the result holds no snapshot (an executor that does not return rows,
 *   such as Prisma's `$executeRawUnsafe`)
 */
export async function readSnapshot(executor: PglnExecutor): Promise<Snapshot> {
  const result: unknown = typeof executor === 'function' ? await executor(SNAPSHOT_SQL, []) : await executor.query(SNAPSHOT_SQL, []);
  const rows = Array.isArray(result) ? (Array.isArray(result[0]) ? result[0] : result) : (result as { rows?: unknown } | null)?.rows;
  const row: unknown = Array.isArray(rows) ? rows[0] : undefined;
  const value = row && typeof row === 'object' ? ((row as { snapshot?: unknown }).snapshot ?? Object.values(row)[0]) : undefined;
  const snapshot = typeof value === 'string' ? parseSnapshot(value) : undefined;
  if (!snapshot) throw new PglnError(SNAPSHOT_UNREADABLE(describe(result)));
  return snapshot;
}

/** What came back, briefly, for the error message. */
function describe(result: unknown): string {
  const text = JSON.stringify(result, (_, value: unknown) => (typeof value === 'bigint' ? String(value) : value));
  return text === undefined ? String(result) : text.length > 120 ? `${text.slice(0, 120)}…` : text;
}
