// @ts-check
/**
 * `npm run drill:failover`: the sample app against a real three-node Patroni cluster (etcd, HAProxy
 * routing to the leader through Patroni's REST checks; Debian's packages and PostgreSQL binaries),
 * while a writer changes products. Two faults: a planned switchover, and a leader killed with
 * SIGKILL. For each it prints the time until the LISTEN connection noticed, until it was live
 * again, and the lost updates (rows where the app's cache differs from the table: must be 0).
 * Everything runs on loopback in a temporary folder and is removed at the end.
 */
import 'reflect-metadata';
import { execFileSync, spawn } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { NestFactory } from '@nestjs/core';
import { PglnService } from 'nestjs-pgln';
import pg from 'pg';
import { freePort } from './embedded-postgres.js';

const log = (/** @type {string} */ line) => process.stdout.write(`${line}\n`);
const sleep = (/** @type {number} */ ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** @param {string} what @param {() => Promise<unknown> | unknown} condition @param {number} [timeoutMs] */
async function until(what, condition, timeoutMs = 60_000) {
  for (const deadline = Date.now() + timeoutMs; ; ) {
    if (await Promise.resolve().then(condition).catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`drill: timed out waiting for ${what}`);
    await sleep(50);
  }
}

const pgBin = readdirSync('/usr/lib/postgresql', { withFileTypes: true })
  .filter((entry) => entry.isDirectory())
  .map((entry) => `/usr/lib/postgresql/${entry.name}/bin`)
  .find((bin) => existsSync(`${bin}/postgres`));
const missing = ['/usr/bin/patroni', '/usr/bin/etcd', '/usr/sbin/haproxy'].filter((path) => !existsSync(path));
if (!pgBin) missing.push('/usr/lib/postgresql/*/bin/postgres');
if (missing.length) {
  log(`drill: cannot run, missing ${missing.join(', ')} (apt-get install -y patroni etcd-server haproxy postgresql)`);
  process.exit(2);
}

const root = userInfo().uid === 0;
const ids = root ? ['-u', '-g'].map((flag) => Number(execFileSync('id', [flag, 'postgres']).toString().trim())) : [];
const dir = mkdtempSync(join(tmpdir(), 'pgln-drill-'));
/** @param {string} path */
const own = (path) => root && chownSync(path, ids[0], ids[1]);
own(dir);

/** @type {import('node:child_process').ChildProcess[]} */
const children = [];
/** @param {string} command @param {string[]} args @param {boolean} asPostgres @param {string} logName */
function start(command, args, asPostgres, logName) {
  const output = openSync(join(dir, `${logName}.log`), 'a');
  const child = spawn(command, args, {
    stdio: ['ignore', output, output],
    ...(asPostgres && root ? { uid: ids[0], gid: ids[1] } : {}),
    env: { ...process.env, HOME: dir },
    cwd: dir,
  });
  child.on('error', (error) => log(`drill: ${logName}: ${error.message}`));
  children.push(child);
  return child;
}
let succeeded = false;
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL');
  try {
    execFileSync('pkill', ['-9', '-f', dir]);
  } catch {
    // nothing left
  }
  // Kept when the drill failed: every component's log is there.
  if (succeeded) rmSync(dir, { recursive: true, force: true });
  else log(`drill: logs kept in ${dir}`);
});

// etcd
const [etcdClient, etcdPeer] = [await freePort(), await freePort()];
start(
  '/usr/bin/etcd',
  [
    '--name', 'drill', '--data-dir', join(dir, 'etcd'),
    '--listen-client-urls', `http://127.0.0.1:${etcdClient}`, '--advertise-client-urls', `http://127.0.0.1:${etcdClient}`,
    '--listen-peer-urls', `http://127.0.0.1:${etcdPeer}`, '--initial-advertise-peer-urls', `http://127.0.0.1:${etcdPeer}`,
    '--initial-cluster', `drill=http://127.0.0.1:${etcdPeer}`,
  ],
  false,
  'etcd',
);
await until('etcd', () => fetch(`http://127.0.0.1:${etcdClient}/health`).then((r) => r.ok));

// Three Patroni nodes.
/** @type {{ name: string; pgPort: number; apiPort: number; process?: import('node:child_process').ChildProcess }[]} */
const nodes = [];
for (const name of ['node1', 'node2', 'node3']) nodes.push({ name, pgPort: await freePort(), apiPort: await freePort() });
for (const node of nodes) {
  const config = `scope: pgln-drill
name: ${node.name}
restapi:
  listen: 127.0.0.1:${node.apiPort}
  connect_address: 127.0.0.1:${node.apiPort}
etcd3:
  hosts: 127.0.0.1:${etcdClient}
bootstrap:
  dcs:
    ttl: 10
    loop_wait: 1
    retry_timeout: 4
    maximum_lag_on_failover: 1048576
    postgresql:
      parameters:
        wal_level: replica
        hot_standby: "on"
        max_wal_senders: 10
        max_replication_slots: 10
        fsync: "off"
  initdb:
    - encoding: UTF8
    - locale: C
  pg_hba:
    - host replication replicator 127.0.0.1/32 trust
    - host all all 127.0.0.1/32 trust
postgresql:
  listen: 127.0.0.1:${node.pgPort}
  connect_address: 127.0.0.1:${node.pgPort}
  data_dir: ${join(dir, node.name)}
  pgpass: ${join(dir, `${node.name}.pgpass`)}
  bin_dir: ${pgBin}
  authentication:
    superuser: { username: postgres, password: drill }
    replication: { username: replicator, password: drill }
  parameters:
    unix_socket_directories: '${dir}'
`;
  const file = join(dir, `${node.name}.yml`);
  writeFileSync(file, config);
  own(file);
  node.process = start('/usr/bin/patroni', [file], true, node.name);
}

/**
 * The cluster as the first node that answers sees it: after a fault, the node asked before may be
 * the one that was killed.
 * @returns {Promise<{ members: { name: string; role: string; state: string }[] }>}
 */
async function cluster() {
  /** @type {unknown} */
  let lastError;
  for (const node of nodes) {
    try {
      const response = await fetch(`http://127.0.0.1:${node.apiPort}/cluster`, { signal: AbortSignal.timeout(2_000) });
      if (response.ok) return /** @type {any} */ (await response.json());
      lastError = new Error(`${node.name}: HTTP ${response.status}`);
    } catch (error) {
      lastError = error;
    }
  }
  throw new Error(`drill: no Patroni node answers (${String(lastError)})`);
}
const leader = async () => (await cluster()).members.find((member) => member.role === 'leader')?.name;
await until(
  'a leader and two streaming replicas',
  async () => {
    const { members } = await cluster();
    const leader = nodes.find((node) => node.name === members.find((m) => m.role === 'leader')?.name);
    if (members.length !== 3 || !leader) return false;
    // Both replicas streaming, as the leader sees them: Patroni says 'running' of a replica whose WAL
    // receiver has not connected yet (its slot not made), and switched over to, it would lack the data.
    const client = new pg.Client({ connectionString: `postgres://postgres:drill@127.0.0.1:${leader.pgPort}/postgres` });
    client.on('error', () => undefined);
    try {
      await client.connect();
      const { rows } = await client.query("SELECT count(*)::int AS n FROM pg_stat_replication WHERE state = 'streaming'");
      return rows[0].n === 2;
    } finally {
      await client.end().catch(() => undefined);
    }
  },
  60_000,
);

// HAProxy: one address that leads to the leader.
const haPort = await freePort();
const haConfig = join(dir, 'haproxy.cfg');
mkdirSync(join(dir, 'haproxy'), { recursive: true });
writeFileSync(
  haConfig,
  `global
  maxconn 400
defaults
  mode tcp
  timeout connect 2s
  timeout client 30m
  timeout server 30m
  timeout check 1s
listen primary
  bind 127.0.0.1:${haPort}
  option httpchk OPTIONS /primary
  http-check expect status 200
  default-server inter 300ms fall 2 rise 1 on-marked-down shutdown-sessions
${nodes.map((node) => `  server ${node.name} 127.0.0.1:${node.pgPort} maxconn 100 check port ${node.apiPort}`).join('\n')}
`,
);
start('/usr/sbin/haproxy', ['-f', haConfig, '-db'], false, 'haproxy');
const url = `postgres://postgres:drill@127.0.0.1:${haPort}/postgres`;
/** Whether a new connection through HAProxy reaches the leader (not a replica, not nothing). */
async function reachesLeader() {
  const client = new pg.Client({ connectionString: url });
  client.on('error', () => undefined);
  try {
    await client.connect();
    const { rows } = await client.query('SELECT pg_is_in_recovery() AS r');
    return rows[0].r === false;
  } finally {
    await client.end().catch(() => undefined);
  }
}
// HAProxy counts servers as up until its checks mark them down: wait until every connection reaches the leader.
await until('HAProxy to route every connection to the leader', async () => {
  for (let i = 0; i < 10; i++) if (!(await reachesLeader())) return false;
  return true;
});

// The sample app, through HAProxy, and a writer.
// The compiled sample (`npm run drill:failover` builds it first), loaded at run time only.
const sample = (/** @type {string} */ path) => import(new URL(`../sample/dist/sample/src/${path}`, import.meta.url).href);
const { createSchema } = await sample('database/schema.js');
const { AppModule } = await sample('app.module.js');
const { ProductCache } = await sample('products/product-cache.service.js');
await createSchema(url);
const setup = new pg.Pool({ connectionString: url, max: 1 });
await setup.query("INSERT INTO products (name, price_cents) SELECT 'product ' || i, 100 + i FROM generate_series(1, 47) AS i");
await setup.end();
const app = await NestFactory.create(AppModule.forDatabase(url), { logger: ['error', 'warn'] });
await app.init();
const pgln = app.get(PglnService);
/** @type {{ state: string; at: number }[]} */
const transitions = [];
pgln.state$.subscribe((change) => transitions.push({ state: change.state, at: Date.now() }));

const db = new pg.Pool({ connectionString: url, max: 4 });
db.on('error', () => undefined);
let failedWrites = 0;

/** Raises random products' prices, one commit each, through HAProxy; failed writes (during a failover) are retried. */
const writer = {
  writes: 0,
  running: false,
  /** @type {Promise<void> | undefined} */
  loop: undefined,
  resume() {
    this.running = true;
    this.loop = (async () => {
      while (this.running) {
        const id = 1 + Math.floor(Math.random() * 50);
        await db.query('UPDATE products SET price_cents = price_cents + 1 WHERE id = $1', [id]).then(
          () => void (this.writes += 1),
          async () => {
            failedWrites += 1;
            await sleep(20);
          },
        );
      }
    })();
  },
  async pause() {
    this.running = false;
    await this.loop;
  },
};
writer.resume();

/** Rows where the cache differs from the table (read through HAProxy, from the leader). */
async function lostUpdates() {
  const { rows } = await db.query('SELECT id, name, price_cents AS "priceCents", version FROM products ORDER BY id');
  const cached = new Map(app.get(ProductCache).all().map((/** @type {{ id: number }} */ p) => [p.id, JSON.stringify(p)]));
  return rows.filter((row) => cached.get(row.id) !== JSON.stringify(row)).length + Math.max(0, cached.size - rows.length);
}

/** @param {string} name @param {() => Promise<void>} fault */
async function drill(name, fault) {
  const writesBefore = writer.writes;
  await until('a few writes', () => writer.writes > writesBefore + 100);
  const before = transitions.length;
  const startedAt = Date.now();
  await fault();
  await until(`the listener to go live again after the ${name}`, () => transitions.slice(before).some((t) => t.state === 'live'), 120_000);
  const noticed = transitions.slice(before).find((t) => t.state !== 'live');
  const live = transitions.slice(before).find((t) => t.state === 'live');
  const writesAfter = writer.writes;
  await until('writes to go on', () => writer.writes > writesAfter + 100);
  // Compare with the writer paused, once the last notifications have landed.
  await writer.pause();
  await until('the cache to settle', async () => (await lostUpdates()) === 0, 5_000).catch(() => undefined);
  const lost = await lostUpdates();
  writer.resume();
  const result = {
    fault: name,
    detectMs: noticed ? noticed.at - startedAt : null,
    liveAgainMs: live ? live.at - startedAt : null,
    lostUpdates: lost,
    leaderAfter: await leader(),
  };
  log(`drill: ${JSON.stringify(result)}`);
  return result;
}

const results = [];
const first = await leader();
const candidate = /** @type {string} */ (nodes.find((node) => node.name !== first)?.name);
results.push(
  await drill(`switchover ${first} -> ${candidate}`, async () => {
    // The switchover goes to the leader's own REST API (any node would forward; the leader surely answers).
    const api = nodes.find((node) => node.name === first)?.apiPort ?? nodes[0].apiPort;
    const response = await fetch(`http://127.0.0.1:${api}/switchover`, {
      method: 'POST',
      body: JSON.stringify({ leader: first, candidate }),
    });
    if (!response.ok) throw new Error(`switchover refused: ${response.status} ${await response.text()}`);
  }),
);
const killed = await leader();
results.push(
  await drill(`leader ${killed} killed (SIGKILL to Patroni and PostgreSQL)`, async () => {
    nodes.find((n) => n.name === killed)?.process?.kill('SIGKILL');
    try {
      execFileSync('pkill', ['-9', '-f', join(dir, String(killed))]);
    } catch {
      // already gone
    }
  }),
);
await writer.pause();
await app.close();
await db.end();
log(JSON.stringify({ writes: writer.writes, failedWrites, results }));
succeeded = results.every((result) => result.lostUpdates === 0);
process.exit(succeeded ? 0 : 1);
