// @ts-check
/**
 * A real three-node Patroni cluster on loopback for `npm run drill:failover`: etcd, three Patroni
 * nodes (Debian's packages and PostgreSQL binaries) and, if asked, HAProxy routing to the leader
 * through Patroni's REST checks. Everything lives in a folder of its own; {@link Cluster.stop}
 * kills it all (the folder is the caller's).
 */
import { execFileSync, spawn } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, openSync, readdirSync, writeFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { freePort } from '../embedded-postgres.js';

export const sleep = (/** @type {number} */ ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** @param {string} what @param {() => Promise<unknown> | unknown} condition @param {number} [timeoutMs] */
export async function until(what, condition, timeoutMs = 60_000) {
  for (const deadline = Date.now() + timeoutMs; ; ) {
    if (await Promise.resolve().then(condition).catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`drill: timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** What the drill needs and is missing, as paths; empty when it can run. */
export function missing() {
  const absent = ['/usr/bin/patroni', '/usr/bin/etcd', '/usr/sbin/haproxy'].filter((path) => !existsSync(path));
  if (!pgBin()) absent.push('/usr/lib/postgresql/*/bin/postgres');
  return absent;
}

function pgBin() {
  return readdirSync('/usr/lib/postgresql', { withFileTypes: true })
    .filter((entry) => entry.isDirectory())
    .map((entry) => `/usr/lib/postgresql/${entry.name}/bin`)
    .find((bin) => existsSync(`${bin}/postgres`));
}

const root = userInfo().uid === 0;
const ids = root ? ['-u', '-g'].map((flag) => Number(execFileSync('id', [flag, 'postgres']).toString().trim())) : [];
/** Made the postgres user's when running as root (PostgreSQL refuses to run as root). @param {string} path */
export const own = (path) => root && chownSync(path, ids[0], ids[1]);

/** Every process started, by any cluster: killed when the drill exits, whatever happened. */
const everyChild = /** @type {import('node:child_process').ChildProcess[]} */ ([]);
process.on('exit', () => {
  for (const child of everyChild) child.kill('SIGKILL');
});

/**
 * @typedef {{ name: string; pgPort: number; apiPort: number; process?: import('node:child_process').ChildProcess }} Node
 * @typedef {{ members: { name: string; role: string; state: string }[] }} Members
 */

/**
 * Starts etcd and three Patroni nodes in `dir`, and HAProxy if `haproxy`; resolves once the leader
 * sees both replicas streaming (and, with HAProxy, once every connection through it reaches the
 * leader). `url` is HAProxy's address, or the three nodes' as a libpq multi-host URL.
 * @param {{ dir: string; haproxy: boolean; log: (line: string) => void }} options
 */
export async function startCluster({ dir, haproxy, log }) {
  mkdirSync(dir, { recursive: true });
  own(dir);
  const children = /** @type {import('node:child_process').ChildProcess[]} */ ([]);
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
    everyChild.push(child);
    return child;
  }

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
  /** @type {Node[]} */
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
  bin_dir: ${pgBin()}
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
   * @returns {Promise<Members>}
   */
  async function members() {
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
  const leader = async () => (await members()).members.find((member) => member.role === 'leader')?.name;
  /** Whether a new connection to `url` reaches the leader (not a replica, not nothing). @param {string} url */
  async function reachesLeader(url) {
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
  await until(
    'a leader and two streaming replicas',
    async () => {
      const { members: list } = await members();
      const first = nodes.find((node) => node.name === list.find((m) => m.role === 'leader')?.name);
      if (list.length !== 3 || !first) return false;
      // Both replicas streaming, as the leader sees them: Patroni says 'running' of a replica whose WAL
      // receiver has not connected yet (its slot not made), and switched over to, it would lack the data.
      const client = new pg.Client({ connectionString: `postgres://postgres:drill@127.0.0.1:${first.pgPort}/postgres` });
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

  let url = `postgres://postgres:drill@${nodes.map((node) => `127.0.0.1:${node.pgPort}`).join(',')}/postgres?target_session_attrs=primary`;
  if (haproxy) {
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
    url = `postgres://postgres:drill@127.0.0.1:${haPort}/postgres`;
    // HAProxy counts servers as up until its checks mark them down: wait until every connection reaches the leader.
    await until('HAProxy to route every connection to the leader', async () => {
      for (let i = 0; i < 10; i++) if (!(await reachesLeader(url))) return false;
      return true;
    });
  }

  return {
    url,
    nodes,
    leader,
    /**
     * A planned switchover, asked of the leader's own REST API (any node would forward; the leader
     * surely answers). Patroni refuses it (412, "no good candidates") while the candidate lags or
     * has not reported yet: asked again then, for up to 60 s. Resolves with when the attempt that
     * was accepted began.
     * @param {string} from @param {string} to
     */
    async switchover(from, to) {
      const api = nodes.find((node) => node.name === from)?.apiPort ?? nodes[0].apiPort;
      for (const deadline = Date.now() + 60_000; ; ) {
        const startedAt = Date.now();
        const response = await fetch(`http://127.0.0.1:${api}/switchover`, { method: 'POST', body: JSON.stringify({ leader: from, candidate: to }) });
        if (response.ok) return startedAt;
        const text = await response.text();
        if (response.status !== 412 || Date.now() > deadline) throw new Error(`switchover refused: ${response.status} ${text}`);
        await sleep(500);
      }
    },
    /** SIGKILL to a node's Patroni and PostgreSQL. @param {string} name */
    kill(name) {
      nodes.find((node) => node.name === name)?.process?.kill('SIGKILL');
      try {
        execFileSync('pkill', ['-9', '-f', join(dir, name)]);
      } catch {
        // already gone
      }
    },
    /** Kills every process of the cluster, PostgreSQL's included (they run from `dir`). */
    stop() {
      for (const child of children) child.kill('SIGKILL');
      try {
        execFileSync('pkill', ['-9', '-f', dir]);
      } catch {
        // nothing left
      }
    },
  };
}
