import { createTestApp, throughProxy, type TestApp } from './support/app.js';
import { adminPool, backends, databaseUrl, unique } from './support/database.js';
import { TcpProxy } from './support/tcp-proxy.js';
import { recorder as recorderFor } from './support/recorder.js';
import { StateLog, waitFor } from './support/wait.js';

const admin = adminPool();
afterAll(() => admin.end());

/** The PIDs of the app's LISTEN backend (`<appName>-listener`) or its spare (`<appName>-listener-spare`). */
async function pids(t: TestApp, role: 'listener' | 'spare'): Promise<number[]> {
  return (await backends(admin, role === 'listener' ? `${t.appName}-listener` : `${t.appName}-listener-spare`)).map(({ pid }) => pid);
}

/**
 * Waits for the app's spare and for its LISTEN connection to count as stable (a spare replaces only what would be
 * reconnected at once: a connection live for a second; one that drops sooner backs off, spare or not; the condition
 * is the time itself). The PIDs of both backends.
 */
async function readyToTakeOver(t: TestApp): Promise<{ spare: number; listener: number }> {
  await waitFor('a spare', async () => (await pids(t, 'spare')).length === 1);
  const [spare] = await pids(t, 'spare');
  const [listener] = await pids(t, 'listener');
  const liveSince = t.pgln.stats().since.getTime();
  await waitFor('the connection to count as stable', () => Date.now() - liveSince >= 1_000);
  return { spare: spare!, listener: listener! };
}

describe('listener: { spare: true }', () => {
  it('keeps a spare beside the LISTEN connection; the LISTEN backend killed, it LISTENs on the spare and opens a new one', async () => {
    const channel = unique('spare');
    const Recorder = recorderFor(channel);
    const t = await createTestApp({ providers: [Recorder] }, { listener: { spare: true } });
    try {
      const recorder = t.get(Recorder);
      const states = new StateLog(t.pgln);
      const { spare, listener } = await readyToTakeOver(t);

      await admin.query('SELECT pg_terminate_backend($1)', [listener]);
      await states.reach('live', 2);
      // The spare is the LISTEN connection now, under the listener's name; a new spare took its place.
      expect(await pids(t, 'listener')).toEqual([spare]);
      await waitFor('a new spare', async () => (await pids(t, 'spare')).some((pid) => pid !== spare));
      expect(recorder.reasons).toEqual(['connect', 'reconnect']);
      expect(t.logs.messages('log')).toContain('LISTEN connection lost: listening on the spare connection');

      await admin.query('SELECT pg_notify($1, $2)', [channel, 'after']);
      expect(await recorder.received.until(1)).toEqual(['after']);
    } finally {
      await t.app.close();
    }
    expect(await pids(t, 'spare')).toEqual([]);
  });

  it('closes while its spare is still connecting: the spare goes, and close() resolves', async () => {
    const proxy = await TcpProxy.forUrl(databaseUrl()).start();
    // The LISTEN connection and the startup probe's get through; the spare's is held, never reaching the server.
    proxy.holdAfter(2);
    // A connect timeout far beyond the wait below: only stopping the attempt closes the held connection in time.
    const t = await createTestApp({}, { listener: { ...throughProxy(proxy).listener, spare: true, connectionTimeoutMillis: 60_000 } });
    const states = new StateLog(t.pgln);
    // init() resolved when the listener went live, which is when the spare began connecting: it is held now.
    await t.app.close();
    expect(states.states.at(-1)).toBe('closed');
    expect(t.logs.messages('error')).toEqual([]);
    await waitFor('no connection left through the proxy', () => proxy.openSockets === 0);
    await proxy.stop();
  });

  it('recovers with a new connection when the spare died unnoticed with the LISTEN connection', async () => {
    const channel = unique('spare');
    const Recorder = recorderFor(channel);
    const proxy = await TcpProxy.forUrl(databaseUrl()).start();
    const t = await createTestApp(
      { providers: [Recorder] },
      { listener: { ...throughProxy(proxy).listener, spare: true }, healthCheck: { intervalMs: 200, timeoutMs: 300 } },
    );
    try {
      const recorder = t.get(Recorder);
      const states = new StateLog(t.pgln);
      await waitFor('a spare', async () => (await pids(t, 'spare')).length === 1);
      const [spare] = await pids(t, 'spare');
      // Both connections go silent for good (a dead network path); new ones get through again.
      proxy.blackhole(true);
      await states.reach('reconnecting');
      proxy.blackhole(false);
      await states.reach('live', 2, 20_000);
      expect(await pids(t, 'listener')).not.toContain(spare);
      expect(recorder.reasons).toEqual(['connect', 'reconnect']);
      await admin.query('SELECT pg_notify($1, $2)', [channel, 'after']);
      expect(await recorder.received.until(1)).toEqual(['after']);
      await waitFor('a new spare', async () => (await pids(t, 'spare')).some((pid) => pid !== spare));
    } finally {
      await t.app.close();
      await proxy.stop();
    }
  });

  it('gives a spare that stopped answering a few of its round trips, not healthCheck.timeoutMs, then connects anew', async () => {
    const channel = unique('spare');
    const Recorder = recorderFor(channel);
    // Checks too rare and too patient to notice the spare in time: only the take-over's own deadline can.
    const t = await createTestApp({ providers: [Recorder] }, { listener: { spare: true }, healthCheck: { intervalMs: 10_000, timeoutMs: 10_000 } });
    try {
      const recorder = t.get(Recorder);
      const states = new StateLog(t.pgln);
      const { spare, listener } = await readyToTakeOver(t);
      // The spare's backend stops answering (from here, a half-open connection), then the LISTEN backend is killed.
      process.kill(spare, 'SIGSTOP');
      try {
        await admin.query('SELECT pg_terminate_backend($1)', [listener]);
        // Well before healthCheck.timeoutMs (10 s), which is what waiting on the spare's answer would take.
        await states.reach('live', 2, 5_000);
      } finally {
        process.kill(spare, 'SIGCONT');
      }
      expect(t.logs.messages('warn').filter((line) => /^The spare connection failed when used \(it did not answer its LISTEN within \d+ ms/.test(line))).toHaveLength(1);
      expect(await pids(t, 'listener')).not.toContain(spare);
      expect(recorder.reasons).toEqual(['connect', 'reconnect']);
      await admin.query('SELECT pg_notify($1, $2)', [channel, 'after']);
      expect(await recorder.received.until(1)).toEqual(['after']);
    } finally {
      await t.app.close();
    }
  });

  it('refuses a spare that is not true or false', async () => {
    await expect(createTestApp({}, { listener: { spare: 'yes' as never } })).rejects.toThrow('listener.spare must be true or false, got "yes"');
  });
});
