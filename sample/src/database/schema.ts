import { createMultiHostPool } from 'nestjs-pgln';

/**
 * Creates the `products` table (idempotent) with a trigger that bumps `version` on every update
 * and notifies channel `products` with the changed row when the change comes from outside the
 * app, and seeds a few rows into an empty table. `connectionString` may list several hosts: it
 * runs on the primary.
 */
export async function createSchema(connectionString: string): Promise<void> {
  const pool = createMultiHostPool({ connectionString, max: 1 });
  const client = await pool.connect();
  try {
    await client.query(`
      CREATE TABLE IF NOT EXISTS products (
        id          serial PRIMARY KEY,
        name        text NOT NULL,
        price_cents integer NOT NULL CHECK (price_cents >= 0),
        version     integer NOT NULL DEFAULT 1
      );

      -- Bumps the version, and notifies of changes made outside the app (psql, a migration,
      -- another service). The app's own writes notify in their transaction through PglnService and
      -- set sample.app_notifies, so the trigger stays quiet for them.
      CREATE OR REPLACE FUNCTION products_changed() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF TG_OP = 'UPDATE' THEN
          NEW.version := OLD.version + 1;
        END IF;
        IF current_setting('sample.app_notifies', true) = 'on' THEN
          RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
        END IF;
        IF TG_OP = 'DELETE' THEN
          PERFORM pg_notify('products', json_build_object('op', 'delete', 'id', OLD.id)::text);
          RETURN OLD;
        END IF;
        -- Absolute state, not a delta: applying it twice, or late, does no harm.
        PERFORM pg_notify('products', json_build_object(
          'op', 'upsert', 'id', NEW.id, 'name', NEW.name, 'priceCents', NEW.price_cents, 'version', NEW.version)::text);
        RETURN NEW;
      END $$;

      DROP TRIGGER IF EXISTS products_changed ON products;
      CREATE TRIGGER products_changed BEFORE INSERT OR UPDATE OR DELETE ON products
        FOR EACH ROW EXECUTE FUNCTION products_changed();

      INSERT INTO products (name, price_cents)
      SELECT name, price_cents FROM (VALUES ('Espresso', 250), ('Cappuccino', 350), ('Croissant', 280)) AS seed(name, price_cents)
      WHERE NOT EXISTS (SELECT 1 FROM products);
    `);
  } finally {
    client.release();
    await pool.end();
  }
}
