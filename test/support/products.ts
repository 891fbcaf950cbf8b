import { Injectable } from '@nestjs/common';
import type pg from 'pg';
import { OnNotification, OnOutOfSync, type OutOfSyncEvent } from '../../lib/index.js';

/** A change as the trigger of {@link createProductsTable} sends it. */
export interface ProductChange {
  id: number;
  version: number;
  deleted?: boolean;
}

/**
 * Creates `table (id, version)` whose trigger notifies `channel` with `{ id, version, deleted }`
 * on every insert, update and delete.
 */
export async function createProductsTable(pool: pg.Pool, table: string, channel: string, rows = 20): Promise<void> {
  await pool.query(`
    CREATE TABLE ${table} (id int PRIMARY KEY, version int NOT NULL DEFAULT 1);
    CREATE FUNCTION ${table}_notify() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify(${quoteLiteral(channel)}, json_build_object('id', OLD.id, 'version', OLD.version, 'deleted', true)::text);
      ELSE
        PERFORM pg_notify(${quoteLiteral(channel)}, json_build_object('id', NEW.id, 'version', NEW.version)::text);
      END IF;
      RETURN NULL;
    END $$;
    CREATE TRIGGER ${table}_notify AFTER INSERT OR UPDATE OR DELETE ON ${table}
      FOR EACH ROW EXECUTE FUNCTION ${table}_notify();
    INSERT INTO ${table} (id) SELECT generate_series(1, ${rows});
  `);
}

export async function dropProductsTable(pool: pg.Pool, table: string): Promise<void> {
  await pool.query(`DROP TABLE IF EXISTS ${table}; DROP FUNCTION IF EXISTS ${table}_notify();`);
}

/** The table as a map id -> version. */
export async function readTable(pool: pg.Pool, table: string): Promise<Map<number, number>> {
  const { rows } = await pool.query<{ id: number; version: number }>(`SELECT id, version FROM ${table}`);
  return new Map(rows.map((row) => [row.id, row.version]));
}

function quoteLiteral(text: string): string {
  return `'${text.replace(/'/g, "''")}'`;
}

/**
 * A cache class kept in sync the way the README recommends: reload on out-of-sync, apply each
 * change (ignoring stale versions) on notification.
 */
export function productCacheFor(pool: pg.Pool, table: string, channel: string) {
  @Injectable()
  class ProductCache {
    rows = new Map<number, number>();
    readonly syncs: OutOfSyncEvent['reason'][] = [];

    @OnOutOfSync(channel)
    async reload(event: OutOfSyncEvent): Promise<void> {
      this.rows = await readTable(pool, table);
      this.syncs.push(event.reason);
    }

    @OnNotification(channel, { json: true })
    apply(change: ProductChange): void {
      if (change.deleted) this.rows.delete(change.id);
      else if ((this.rows.get(change.id) ?? 0) < change.version) this.rows.set(change.id, change.version);
    }
  }
  return ProductCache;
}
