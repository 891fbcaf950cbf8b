import { Injectable } from '@nestjs/common';
import { OnOutOfSync, PglnConnectionError, PglnOptionsError, PglnService } from '../lib/index.js';
import { resolveOptions } from '../lib/pgln.options.js';
import { buildTestApp, createTestApp, initFailure, throughProxy } from './support/app.js';
import pg from 'pg';
import { adminPool, databaseUrl, terminate, unique } from './support/database.js';
import { LocalServer } from './support/replication.js';
import { TcpProxy } from './support/tcp-proxy.js';
import { StateLog, deferred, waitFor } from './support/wait.js';

const admin = adminPool();
afterAll(() => admin.end());

const SECRET = 'hunter2-do-not-log';

/** The test server's URL with another user, password or database. */
function urlWith(changes: { user?: string; password?: string; database?: string }): string {
  const url = new URL(databaseUrl());
  if (changes.user) url.username = changes.user;
  if (changes.password) url.password = changes.password;
  if (changes.database) url.pathname = `/${changes.database}`;
  return url.toString();
}

@Injectable()
class Listening {
  @OnOutOfSync('startup_spec')
  resync() {}
}

describe('at startup, errors that retrying cannot fix fail app.init() at once', () => {
  it.each([
    ['unknown user or wrong password', () => urlWith({ user: unique('nobody'), password: SECRET }), /password authentication failed|role ".*" does not exist/],
    ['unknown database', () => urlWith({ database: unique('nodb') }), /database ".*" does not exist/],
  ])('%s', async (_, url, reason) => {
    const built = await buildTestApp({ providers: [Listening] }, { connectionString: url() });
    const failure = await initFailure(built);
    expect(failure).toBeInstanceOf(PglnConnectionError);
    const message = (failure as Error).message;
    expect(message).toMatch(reason);
    expect(message).toMatch(/Retrying cannot fix this, so startup fails now: check the connection settings/);
    expect(message).toContain(`:${new URL(databaseUrl()).port}/`);
    expect(built.logs.messages('warn').filter((line) => line.startsWith('Cannot connect'))).toEqual([]);
    expect(message).not.toContain(SECRET);
    expect(built.logs.text()).not.toContain(SECRET);
  });

  it('a listen() awaited in onModuleInit fails app.init() with that same PglnConnectionError', async () => {
    @Injectable()
    class EarlyListener {
      constructor(private readonly pgln: PglnService) {}
      async onModuleInit() {
        await this.pgln.listen(unique('early'), { onOutOfSync: () => undefined });
      }
    }
    const built = await buildTestApp({ providers: [EarlyListener] }, { connectionString: urlWith({ database: unique('nodb') }) });
    const failure = await initFailure(built);
    expect(failure).toBeInstanceOf(PglnConnectionError);
    expect((failure as Error).message).toMatch(/database ".*" does not exist/);
  });

  it('logs the target pg will use, with PGHOST, PGPORT, PGUSER and PGDATABASE filled in from the environment', () => {
    const saved = { ...process.env };
    Object.assign(process.env, { PGHOST: 'db.internal', PGPORT: '6432', PGUSER: 'app', PGDATABASE: 'shop' });
    try {
      // A pool configured from the environment alone, as `new pg.Pool()` is.
      const pool = new pg.Pool();
      expect(resolveOptions({ pool }).connection!.target).toBe('app@db.internal:6432/shop');
      expect(resolveOptions({ pool, listener: { port: 5433 } }).connection!.target).toBe('app@db.internal:5433/shop');
      delete process.env.PGDATABASE;
      expect(resolveOptions({ pool }).connection!.target).toBe('app@db.internal:6432/app');
      void pool.end();
    } finally {
      process.env = saved;
    }
  });

  it('a connection string that cannot be parsed fails when the module is created, without echoing it', async () => {
    const failure = await createTestApp({}, { connectionString: `postgres://user:${SECRET}@host:notaport/db` }).catch(
      (error: unknown) => error,
    );
    expect(failure).toBeInstanceOf(PglnOptionsError);
    expect((failure as Error).message).toMatch(/connectionString cannot be parsed: Invalid URL/);
    expect((failure as Error).message).not.toContain(SECRET);
  });
});

describe('at startup, an unreachable server is retried until startupTimeoutMs', () => {
  it('then fails naming host and port, with one log line per attempt', async () => {
    const proxy = await TcpProxy.forUrl(databaseUrl()).start();
    proxy.refuse(true);
    try {
      const built = await buildTestApp({ providers: [Listening] }, { ...throughProxy(proxy), startupTimeoutMs: 300 });
      const failure = await initFailure(built);
      expect(failure).toBeInstanceOf(PglnConnectionError);
      expect((failure as Error).message).toMatch(
        new RegExp(`^Cannot reach PostgreSQL at .*127\\.0\\.0\\.1:${proxy.port}/.* within startupTimeoutMs \\(300 ms\\); last error: Connection terminated unexpectedly`),
      );
      const attempts = built.logs.messages('warn').filter((line) => line.startsWith('Cannot connect'));
      expect(attempts.length).toBeGreaterThanOrEqual(2);
      // One line per attempt at most (the attempt cut short by the startup timeout logs none).
      expect(attempts.length).toBeLessThanOrEqual(proxy.refused);
      expect(attempts.length).toBeGreaterThanOrEqual(proxy.refused - 1);
      expect(built.pgln.state).toBe('closed');
    } finally {
      await proxy.stop();
    }
  });

  it('and succeeds if the server answers in time', async () => {
    const proxy = await TcpProxy.forUrl(databaseUrl()).start();
    proxy.refuse(true);
    try {
      const built = await buildTestApp({ providers: [Listening] }, throughProxy(proxy));
      const init = built.app.init();
      await waitFor('two refused attempts', () => proxy.refused >= 2);
      proxy.refuse(false);
      await init;
      expect(built.pgln.state).toBe('live');
      await built.app.close();
    } finally {
      await proxy.stop();
    }
  });
});

/** A login role for one test, dropped afterwards (roles are shared by the whole server). */
async function withRole(run: (role: string, url: string) => Promise<void>): Promise<void> {
  const role = unique('pgln_role');
  await admin.query(`CREATE ROLE ${role} LOGIN PASSWORD '${SECRET}'`);
  try {
    await run(role, urlWith({ user: role, password: SECRET }));
  } finally {
    await admin.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1`, [role]);
    await admin.query(`DROP ROLE IF EXISTS ${role}`);
  }
}

/** A provider whose first out-of-sync handler waits until released: startup stays in progress meanwhile. */
function slowStart() {
  const release = deferred();
  const started = deferred();
  @Injectable()
  class SlowStart {
    @OnOutOfSync(unique('slow_start'))
    async resync() {
      started.resolve();
      await release.promise;
    }
  }
  return { SlowStart, started, release };
}

describe('startup lasts until the first time every channel is in sync', () => {
  it('a connection lost while the first out-of-sync handlers run gets a new startupTimeoutMs to come back', async () => {
    const proxy = await TcpProxy.forUrl(databaseUrl()).start();
    const { SlowStart, started, release } = slowStart();
    try {
      const built = await buildTestApp({ providers: [SlowStart] }, { ...throughProxy(proxy), startupTimeoutMs: 300 });
      const init = built.app.init().then(
        () => undefined,
        (error: unknown) => error,
      );
      await started.promise;
      proxy.refuse(true);
      proxy.resetAll();
      const failure = await init;
      release.resolve();
      await built.app.close();
      expect(failure).toBeInstanceOf(PglnConnectionError);
      expect((failure as Error).message).toMatch(/within startupTimeoutMs \(300 ms\)/);
    } finally {
      release.resolve();
      await proxy.stop();
    }
  });

  it('an error retrying cannot fix still fails startup at once after a first LISTEN', () =>
    withRole(async (role, url) => {
      const { SlowStart, started, release } = slowStart();
      const built = await buildTestApp({ providers: [SlowStart] }, { listener: { connectionString: url } });
      const init = built.app.init().then(
        () => undefined,
        (error: unknown) => error,
      );
      await started.promise;
      await admin.query(`ALTER ROLE ${role} NOLOGIN`);
      await terminate(admin, `${built.appName}-listener`);
      const failure = await init;
      release.resolve();
      await built.app.close();
      expect(failure).toBeInstanceOf(PglnConnectionError);
      expect((failure as Error).message).toMatch(/is not permitted to log in/);
      expect((failure as Error).message).toContain(`${role}@`);
    }));
});

describe('retryable at any time', () => {
  // A real hot standby needs a server of its own: the version under test (see LocalServer).
  it('a standby in recovery, which refuses LISTEN, is retried with backoff until it is promoted', async () => {
    const server = await LocalServer.primary();
    try {
      await server.stop();
      await server.startAsStandby();
      const built = await buildTestApp({ providers: [Listening] }, { connectionString: server.url });
      const init = built.app.init();
      await waitFor('two failed LISTEN attempts', () =>
        built.logs.messages('warn').filter((line) => /cannot execute LISTEN during recovery \(25006\)/.test(line)).length >= 2,
      );
      expect(built.pgln.state).toBe('connecting');
      const promoter = new pg.Client({ connectionString: server.url });
      await promoter.connect();
      await promoter.query('SELECT pg_promote()');
      await promoter.end();
      await init;
      expect(built.pgln.state).toBe('live');
      await built.app.close();
    } finally {
      await server.destroy();
    }
  });

  it('after startup, even an authentication error is retried until it clears', () =>
    withRole(async (role, url) => {
      const t = await createTestApp({ providers: [Listening] }, { listener: { connectionString: url } });
      const states = new StateLog(t.pgln);
      try {
        await admin.query(`ALTER ROLE ${role} NOLOGIN`);
        await terminate(admin, `${t.appName}-listener`);
        await waitFor('two refused logins', () =>
          t.logs.messages('warn').filter((line) => /is not permitted to log in/.test(line)).length >= 2,
        );
        expect(t.pgln.state).toBe('reconnecting');
        await admin.query(`ALTER ROLE ${role} LOGIN`);
        await states.reach('live', 2);
        expect(t.logs.text()).not.toContain(SECRET);
      } finally {
        await t.app.close();
      }
    }));
});
