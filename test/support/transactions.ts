import type pg from 'pg';
import type { TestApp } from './app.js';
import { unique } from './database.js';
import { Inbox } from './wait.js';

/**
 * A table of items and a listener on its channel that, for each notification (the id of an
 * item), reads the table: it records whether the row the notification announces was visible.
 * The same three cases then run for every way of writing (pg, each ORM): a committed write is
 * delivered once, after its row is visible; a rolled-back one never; one in a transaction that
 * fails after the notify never.
 */
export class TransactionProbe {
  readonly table: string;
  readonly channel: string;
  /** `id:visible` or `id:missing`, per notification, in arrival order. */
  readonly seen = new Inbox<string>();
  private off?: () => Promise<void>;
  /** How many items earlier settle() calls returned (or passed over). */
  private settled = 0;

  /** `names`: the table and channel (unique ones by default; fixed ones need a database of their own). */
  constructor(
    private readonly admin: pg.Pool,
    names: { table: string; channel: string } = { table: unique('items'), channel: unique('items_changed') },
  ) {
    this.table = names.table;
    this.channel = names.channel;
  }

  async start(t: TestApp): Promise<void> {
    await this.admin.query(`CREATE TABLE ${this.table} (id text PRIMARY KEY, name text NOT NULL)`);
    this.off = await t.pgln.listen(this.channel, {
      onNotification: async (id: string) => {
        const { rowCount } = await this.admin.query(`SELECT 1 FROM ${this.table} WHERE id = $1`, [id]);
        this.seen.push(`${id}:${rowCount ? 'visible' : 'missing'}`);
      },
    });
  }

  /** The statement that inserts an item (text with $1, $2), for every library's raw query. */
  get insertSql(): string {
    return `INSERT INTO ${this.table} (id, name) VALUES ($1, $2)`;
  }

  /** Counts the table's rows, as `n` (an int). */
  get countSql(): string {
    return `SELECT count(*)::int AS n FROM ${this.table}`;
  }

  /**
   * What arrived since the last call, once nothing more can be on its way for what was sent before:
   * sends a marker and waits for it (notifications of one channel arrive in commit order).
   */
  async settle(t: TestApp): Promise<string[]> {
    const marker = unique('marker');
    await t.pgln.notify(this.channel, marker);
    while (!this.seen.items.includes(`${marker}:missing`)) await this.seen.until(this.seen.items.length + 1);
    const arrived = this.seen.items.slice(this.settled).filter((item) => item !== `${marker}:missing`);
    this.settled = this.seen.items.length;
    return arrived;
  }

  async stop(): Promise<void> {
    await this.off?.();
    await this.admin.query(`DROP TABLE IF EXISTS ${this.table}`);
  }
}
