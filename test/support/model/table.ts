import type pg from 'pg';

/**
 * The model test's table: a few rows per channel, each with a version. Every notification the test
 * sends on a table channel announces a change it makes in the same transaction: an upsert or a
 * delete of one row, whose version a counter per row raises, so versions grow in commit order. The
 * payload says which (`{ s: seq, k: key, v: version, d: deleted }`). Markers (`{ s: seq }`) change
 * nothing, so that a wrong delivery is not hidden by a later write of the same row.
 */

/** Rows per channel: few, so that writes of one row meet often. */
export const KEYS = 3;

/** A row's version in a copy or in the table; absent: deleted (or never written). */
export type Rows = Map<number, number>;

/** What a notification carries. */
export interface Change {
  readonly s: number;
  readonly k?: number;
  readonly v?: number;
  readonly d?: boolean;
}

/** The change the notification of `seq` makes: every fifth deletes its row. */
export function changeFor(seq: number): { key: number; deleted: boolean } {
  return { key: seq % KEYS, deleted: seq % 5 === 0 };
}

export class ModelTable {
  constructor(
    private readonly admin: pg.Pool,
    /** The table's name; its version counters are `<name>_v`. */
    readonly name: string,
  ) {}

  async create(channels: number): Promise<void> {
    await this.admin.query(`
      CREATE TABLE ${this.name} (channel int, key int, version int NOT NULL, PRIMARY KEY (channel, key));
      CREATE TABLE ${this.name}_v (channel int, key int, version int NOT NULL DEFAULT 0, PRIMARY KEY (channel, key));
      INSERT INTO ${this.name}_v (channel, key) SELECT c, k FROM generate_series(0, ${channels - 1}) c, generate_series(0, ${KEYS - 1}) k;`);
  }

  async drop(): Promise<void> {
    await this.admin.query(`DROP TABLE IF EXISTS ${this.name}, ${this.name}_v`);
  }

  /** Makes the change of `seq` on `channel` in the transaction of `client`; returns the payload announcing it. */
  async write(client: pg.PoolClient, channel: number, seq: number): Promise<Change> {
    const { key, deleted } = changeFor(seq);
    const { rows } = await client.query<{ version: number }>(
      `UPDATE ${this.name}_v SET version = version + 1 WHERE channel = $1 AND key = $2 RETURNING version`,
      [channel, key],
    );
    const version = rows[0]!.version;
    if (deleted) await client.query(`DELETE FROM ${this.name} WHERE channel = $1 AND key = $2`, [channel, key]);
    else {
      await client.query(
        `INSERT INTO ${this.name} (channel, key, version) VALUES ($1, $2, $3) ON CONFLICT (channel, key) DO UPDATE SET version = excluded.version`,
        [channel, key, version],
      );
    }
    return { s: seq, k: key, v: version, d: deleted };
  }

  /** The rows of `channel`, read through `query` (a reload's own connection, or the pool). */
  async read(channel: number, query: (text: string, values: unknown[]) => Promise<{ rows: { key: number; version: number }[] }> = (text, values) => this.admin.query(text, values)): Promise<Rows> {
    const { rows } = await query(`SELECT key, version FROM ${this.name} WHERE channel = $1`, [channel]);
    return new Map(rows.map((row) => [row.key, row.version]));
  }
}

/** A change applied to a copy, as a handler that trusts the notification does: no version check. */
export function apply(copy: Rows, change: Change): void {
  if (change.k === undefined) return;
  if (change.d) copy.delete(change.k);
  else copy.set(change.k, change.v!);
}

/** `a` and `b` as `key:version` lists, for messages; equal when the strings are. */
export function describeRows(rows: Rows): string {
  return [...rows].sort(([a], [b]) => a - b).map(([key, version]) => `${key}:v${version}`).join(' ') || '(empty)';
}
