import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { freePort } from '../../tools/embedded-postgres.js';
import { waitFor } from './wait.js';

const CANDIDATES = ['/usr/sbin/pgbouncer', '/usr/bin/pgbouncer', '/usr/local/bin/pgbouncer', '/opt/homebrew/bin/pgbouncer'];

/** The PgBouncer binary: $PGBOUNCER, or the usual install locations. */
function binary(): string | undefined {
  return [process.env.PGBOUNCER, ...CANDIDATES].find((path): path is string => !!path && existsSync(path));
}

/** Why suites that need PgBouncer cannot run here, or undefined when they can. */
export function pgbouncerMissing(): string | undefined {
  if (!binary()) return `no pgbouncer binary (looked at $PGBOUNCER and ${CANDIDATES.join(', ')}); install it, e.g. apt-get install -y pgbouncer`;
  if (userInfo().uid === 0 && spawnSync('id', ['-u', 'postgres']).status !== 0) {
    return 'running as root, PgBouncer needs a "postgres" user to run as, and there is none';
  }
  return undefined;
}

/** A real PgBouncer in front of the test server, started by the test itself. */
export class PgBouncer {
  private process?: ChildProcess;
  private readonly dir: string;
  private readonly upstream: URL;

  private constructor(
    upstreamUrl: string,
    readonly poolMode: 'transaction' | 'session',
    readonly port: number,
    /** More `pgbouncer.ini` settings, `key = value` lines of its `[pgbouncer]` section. */
    private readonly settings: readonly string[],
  ) {
    this.upstream = new URL(upstreamUrl);
    this.dir = mkdtempSync(join(tmpdir(), 'pgln-pgbouncer-'));
  }

  /**
   * Starts PgBouncer in `poolMode` on a free port, every database forwarded to the server of
   * `upstreamUrl`; `settings` are more `key = value` lines for its configuration.
   */
  static async start(upstreamUrl: string, poolMode: 'transaction' | 'session', settings: readonly string[] = []): Promise<PgBouncer> {
    const bouncer = new PgBouncer(upstreamUrl, poolMode, await freePort(), settings);
    bouncer.writeConfig();
    await bouncer.run();
    return bouncer;
  }

  /** `url` (a connection string of the test server) pointed at PgBouncer instead. */
  url(url = this.upstream.toString()): string {
    const parsed = new URL(url);
    parsed.hostname = '127.0.0.1';
    parsed.port = String(this.port);
    return parsed.toString();
  }

  /** Runs a command on PgBouncer's admin console: `RECONNECT`, `KILL db`, `PAUSE`, `RESUME`, `SHOW POOLS`... */
  async admin<R extends pg.QueryResultRow = pg.QueryResultRow>(command: string): Promise<R[]> {
    const client = new pg.Client({ host: '127.0.0.1', port: this.port, user: 'pgbouncer', database: 'pgbouncer' });
    await client.connect();
    try {
      return (await client.query<R>(command)).rows;
    } finally {
      await client.end();
    }
  }

  /** The database name clients use (the test server's). */
  get database(): string {
    return this.upstream.pathname.slice(1) || 'postgres';
  }

  /** Kills PgBouncer at once (SIGKILL: no goodbye to anyone) and starts it again on the same port. */
  async crashAndRestart(): Promise<void> {
    const stopped = new Promise((resolve) => this.process!.once('exit', resolve));
    this.process!.kill('SIGKILL');
    await stopped;
    await this.run();
  }

  async stop(): Promise<void> {
    if (this.process && this.process.exitCode === null) {
      const stopped = new Promise((resolve) => this.process!.once('exit', resolve));
      this.process.kill('SIGTERM');
      await stopped;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }

  private writeConfig(): void {
    const { hostname, port, username, password } = this.upstream;
    const server = [`host=${hostname}`, `port=${port || 5432}`, `user=${decodeURIComponent(username) || 'postgres'}`];
    if (password) server.push(`password=${decodeURIComponent(password)}`);
    const ini = [
      '[databases]',
      `* = ${server.join(' ')}`,
      '[pgbouncer]',
      'listen_addr = 127.0.0.1',
      `listen_port = ${this.port}`,
      'unix_socket_dir =',
      // Test-only: loopback, any client name, logged in upstream as the test server's user.
      'auth_type = any',
      'admin_users = pgbouncer',
      `pool_mode = ${this.poolMode}`,
      'default_pool_size = 4',
      // After KILL it waits this long before logging in to the server again (default 15 s).
      'server_login_retry = 1',
      'max_client_conn = 200',
      'ignore_startup_parameters = extra_float_digits,options',
      `logfile = ${join(this.dir, 'pgbouncer.log')}`,
      `pidfile = ${join(this.dir, 'pgbouncer.pid')}`,
      ...this.settings,
    ].join('\n');
    writeFileSync(join(this.dir, 'pgbouncer.ini'), `${ini}\n`, { mode: 0o600 });
  }

  private async run(): Promise<void> {
    const args = [join(this.dir, 'pgbouncer.ini')];
    // PgBouncer refuses to run as root: it runs as postgres then, which must own its folder.
    if (userInfo().uid === 0) {
      const [uid, gid] = ['-u', '-g'].map((flag) => Number(execFileSync('id', [flag, 'postgres']).toString().trim()));
      for (const path of [this.dir, join(this.dir, 'pgbouncer.ini')]) chownSync(path, uid!, gid!);
      args.unshift('-u', 'postgres');
    }
    const child = spawn(binary()!, args, { stdio: 'ignore' });
    this.process = child;
    // Whatever happens to the test (a timeout abandons it before its finally), PgBouncer goes with the worker.
    const kill = () => child.kill('SIGKILL');
    process.once('exit', kill);
    child.once('exit', () => process.removeListener('exit', kill));
    await waitFor(`PgBouncer to accept connections on port ${this.port}`, () =>
      this.admin('SHOW VERSION').then(
        () => true,
        () => false,
      ),
    );
  }
}
