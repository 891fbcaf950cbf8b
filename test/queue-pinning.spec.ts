import { Injectable, type Logger } from '@nestjs/common';
import pg from 'pg';
import { OnNotification, OnOutOfSync } from '../lib/index.js';
import { QueueUsage } from '../lib/pgln.queue-usage.js';
import { createTestApp, proxyForEachTest, throughProxy, type TestApp } from './support/app.js';
import { adminPool, backends, databaseUrl, unique } from './support/database.js';
import { CapturingLogger } from './support/logs.js';
import { TcpProxy } from './support/tcp-proxy.js';
import { StateLog, waitFor } from './support/wait.js';

/**
 * PostgreSQL cannot truncate its notification queue past the slowest listener, and at 8 GB every
 * NOTIFY in the cluster fails. The module must never be that listener: it terminates the backends
 * its replaced connections leave behind, and warns when something else pins the queue.
 */

const admin = adminPool();
afterAll(() => admin.end());

let proxy: TcpProxy;
proxyForEachTest((started) => (proxy = started));

function listening(channel: string) {
  @Injectable()
  class Listening {
    @OnOutOfSync(channel)
    resync() {}
    @OnNotification(channel)
    receive() {}
  }
  return Listening;
}

/** Blackholes the listener until it has been replaced by a live connection; resolves with the old backend's PID. */
async function replaceHalfOpen(t: TestApp, states: StateLog): Promise<number> {
  const [old] = await backends(admin, `${t.appName}-listener`);
  const lives = states.count('live');
  const orphaned = proxy.orphaned;
  proxy.blackhole(true);
  await states.reach('reconnecting', states.count('reconnecting') + 1);
  await waitFor('the proxy to see the client give up', () => proxy.orphaned > orphaned);
  // The client gave up on the connection; the server never learned, and its backend LISTENs on.
  expect((await backends(admin, `${t.appName}-listener`)).map((backend) => backend.pid)).toContain(old!.pid);
  proxy.blackhole(false);
  await states.reach('live', lives + 1);
  return old!.pid;
}

describe('the backend of a replaced half-open connection', () => {
  it('is terminated once the new connection is live, with one log line', async () => {
    const t = await createTestApp({ providers: [listening(unique('pinning'))] }, { ...throughProxy(proxy), healthCheck: { intervalMs: 100, timeoutMs: 300 } });
    try {
      const states = new StateLog(t.pgln);
      const old = await replaceHalfOpen(t, states);
      const terminated = new RegExp(`^Terminated the backend\\(s\\) of earlier LISTEN connection\\(s\\) still on the server \\(pid (\\d+, )*${old}(, \\d+)*\\): listening without reading, they would pin its notification queue\\.$`);
      await waitFor('the termination to be logged', () => t.logs.messages('warn').some((line) => terminated.test(line)));
      await waitFor('the old backend to be gone', async () => !(await backends(admin, `${t.appName}-listener`)).some((b) => b.pid === old));
      expect(await backends(admin, `${t.appName}-listener`)).toHaveLength(1);
    } finally {
      await t.app.close();
    }
  });

  describe('when terminating it is not permitted', () => {
    const schema = unique('no_signal');
    beforeAll(() =>
      // Stands in for a role without the right to signal that backend (SQLSTATE 42501).
      admin.query(`
        CREATE SCHEMA ${schema};
        CREATE FUNCTION ${schema}.pg_terminate_backend(pid int) RETURNS boolean LANGUAGE plpgsql AS $$
        BEGIN
          RAISE EXCEPTION 'permission denied to terminate process' USING ERRCODE = '42501';
        END $$;`),
    );
    afterAll(() => admin.query(`DROP SCHEMA ${schema} CASCADE`));

    it('is logged once, and the listener goes on', async () => {
      const channel = unique('no_signal');
      const t = await createTestApp(
        { providers: [listening(channel)] },
        {
          listener: { host: '127.0.0.1', port: proxy.port, options: `-c search_path=${schema},pg_catalog` },
          healthCheck: { intervalMs: 100, timeoutMs: 300 },
        },
      );
      try {
        const states = new StateLog(t.pgln);
        const first = await replaceHalfOpen(t, states);
        await waitFor('the failure to be logged', () => t.logs.messages('warn').some((line) => line.startsWith('Cannot terminate')));
        await replaceHalfOpen(t, states);
        const failures = t.logs.messages('warn').filter((line) => line.startsWith('Cannot terminate'));
        expect(failures).toEqual([
          'Cannot terminate the backends of earlier LISTEN connections (permission denied to terminate process (42501)); they stay until TCP gives up on them, pinning the notification queue meanwhile. Grant pg_signal_backend, or use the same role, to let the module clean up.',
        ]);
        expect(t.pgln.state).toBe('live');
        await admin.query('SELECT pg_terminate_backend($1)', [first]);
      } finally {
        await t.app.close();
      }
    });
  });
});

describe('the notification queue usage', () => {
  it('is read by the health check, observable in stats(), and warned about once per crossing', async () => {
    const channel = unique('filler');
    // A few hundred KB pinned in the queue: the threshold shrinks instead of filling gigabytes.
    const t = await createTestApp({ providers: [listening(channel)] }, { healthCheck: { intervalMs: 50, timeoutMs: 1000, queueUsageWarning: 0.00005 } });
    const pinner = new pg.Client({ connectionString: databaseUrl() });
    await pinner.connect();
    try {
      await waitFor('a first reading', () => t.pgln.stats().notificationQueueUsage !== undefined);
      expect(t.pgln.stats()).toMatchObject({ state: 'live', lastHealthCheck: { roundTripMs: expect.any(Number) } });
      // A session LISTENing inside an open transaction reads nothing until it ends: the queue cannot be truncated.
      await pinner.query(`LISTEN ${unique('pinned')}`);
      await pinner.query('BEGIN; SELECT 1');
      const payload = 'x'.repeat(7000);
      for (let i = 0; i < 150; i++) await admin.query('SELECT pg_notify($1, $2)', [channel, `${i}:${payload}`]);
      await waitFor('the warning', () => t.logs.messages('warn').some((line) => line.startsWith("PostgreSQL's notification queue is")), { timeoutMs: 20_000 });
      expect(t.pgln.stats().notificationQueueUsage).toBeGreaterThanOrEqual(0.00005);
      const warning = t.logs.messages('warn').find((line) => line.startsWith("PostgreSQL's notification queue is"));
      expect(warning).toMatch(/^PostgreSQL's notification queue is [\d.]+% full \(healthCheck.queueUsageWarning: 0.005%\)\. A session that LISTENs but does not read/);

      await pinner.query('COMMIT');
      // The next notification lets the queue's tail advance past what everyone has read.
      await waitFor(
        'the queue to drain',
        async () => {
          await admin.query('SELECT pg_notify($1, $2)', [channel, 'nudge']);
          return t.logs.messages('log').some((line) => line.startsWith("PostgreSQL's notification queue is back below"));
        },
        { timeoutMs: 20_000, intervalMs: 100 },
      );
      // (Once per crossing is QueueUsage's unit test: other suites share this server's queue.)
    } finally {
      await pinner.end().catch(() => undefined);
      await t.app.close();
    }
  });
});

describe('QueueUsage', () => {
  it('warns once per crossing of the threshold, and says once when usage is back below', () => {
    const logs = new CapturingLogger();
    const usage = new QueueUsage(0.5, logs as unknown as Logger);
    for (const reading of [0.1, 0.6, 0.7, 0.9, 0.4, 0.3, 0.55, 0.2]) usage.observe(reading);
    expect(logs.lines.map((line) => `${line.level}:${line.message.slice(0, 40)}`)).toEqual([
      "warn:PostgreSQL's notification queue is 60% f",
      "log:PostgreSQL's notification queue is back ",
      "warn:PostgreSQL's notification queue is 55% f",
      "log:PostgreSQL's notification queue is back ",
    ]);
    expect(usage.last).toBe(0.2);
  });
});
