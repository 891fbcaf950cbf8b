import pg from 'pg';

/** The server every suite runs against (set by global-setup). */
export function databaseUrl(): string {
  const url = process.env.PGLN_TEST_DATABASE_URL;
  if (!url) throw new Error('PGLN_TEST_DATABASE_URL is not set: run the tests through `npm test`');
  return url;
}

let counter = 0;

/**
 * A name no other test, worker or earlier run uses (channels and tables are shared by every
 * connection to the database).
 */
export function unique(prefix: string): string {
  counter += 1;
  return `${prefix}_${process.pid}_${counter}_${Math.random().toString(36).slice(2, 7)}`;
}

/** A pool for the test's own queries (writes, checks); `end()` it in afterAll. */
export function adminPool(): pg.Pool {
  return new pg.Pool({ connectionString: databaseUrl(), application_name: 'pgln-test-admin', max: 4 });
}

/**
 * A pool on a database the test drops when it is done. pool.end() resolves before its connections
 * have closed, so the `DROP DATABASE ... WITH (FORCE)` right after it may terminate one, which the
 * pool then reports as an `'error'`: heard here, or it would fail the test file.
 */
export function poolOnDroppedDatabase(config: pg.PoolConfig): pg.Pool {
  const pool = new pg.Pool(config);
  pool.on('error', () => undefined);
  return pool;
}

/** Backends whose application_name is `name`. */
export async function backends(pool: pg.Pool, name: string): Promise<{ pid: number; query: string }[]> {
  const { rows } = await pool.query<{ pid: number; query: string }>(
    'SELECT pid, query FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()',
    [name],
  );
  return rows;
}

/** Kills the backends whose application_name is `name` (what an admin or a failover does); returns how many. */
export async function terminate(pool: pg.Pool, name: string): Promise<number> {
  const { rows } = await pool.query<{ ok: boolean }>(
    'SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()',
    [name],
  );
  return rows.filter((row) => row.ok).length;
}
