// @ts-check
import pg from 'pg';
import { startEmbeddedPostgres } from '../../tools/embedded-postgres.js';

/**
 * Provides the PostgreSQL every suite runs against: the server at PGLN_TEST_DATABASE_URL when set,
 * otherwise an embedded one started for this run. Workers read the URL from the environment;
 * PGLN_TEST_EMBEDDED tells them that the tests own the server (and may stop and start it).
 */
export default async function globalSetup() {
  const given = process.env.PGLN_TEST_DATABASE_URL;
  if (!given) {
    const server = await startEmbeddedPostgres();
    /** @type {any} */ (globalThis).__PGLN_EMBEDDED__ = server;
    process.env.PGLN_TEST_DATABASE_URL = server.url;
    process.env.PGLN_TEST_EMBEDDED = '1';
  }
  const client = new pg.Client({ connectionString: process.env.PGLN_TEST_DATABASE_URL });
  await client.connect();
  const { rows } = await client.query('SHOW server_version');
  await client.end();
  const source = given ? 'PGLN_TEST_DATABASE_URL' : 'embedded, started for this run';
  process.stdout.write(`\nTesting against PostgreSQL ${rows[0].server_version} (${source})\n`);
}
