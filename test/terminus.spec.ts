import { Controller, Get, Injectable, Query } from '@nestjs/common';
import { HealthCheck, HealthCheckService, HealthIndicatorService, TerminusModule } from '@nestjs/terminus';
import { OnNotification, OnOutOfSync, PglnModule, PglnOptionsError, type OutOfSyncEvent } from '../lib/index.js';
import { PglnHealthIndicator } from '../lib/terminus/index.js';
import { createTestApp, proxyForEachTest, throughProxy, type TestApp } from './support/app.js';
import { TcpProxy } from './support/tcp-proxy.js';
import { adminPool, databaseUrl, terminate, unique } from './support/database.js';
import { deferred, waitFor } from './support/wait.js';

const admin = adminPool();
afterAll(() => admin.end());

const channel = unique('health');

/** Holds the out-of-sync handler of a reconnect while `hold` is set: the listener then stays in `syncing`. */
const gate: { hold?: Promise<void> } = {};

@Injectable()
class Cache {
  @OnNotification(channel)
  apply() {}
  @OnOutOfSync(channel)
  async reload(event: OutOfSyncEvent) {
    if (event.reason === 'reconnect') await gate.hold;
  }
}

@Controller('health')
class HealthController {
  constructor(
    private readonly health: HealthCheckService,
    private readonly pgln: PglnHealthIndicator,
  ) {}

  /** `?downAfterMs=` picks the grace, so that one endpoint shows both sides of it. */
  @Get()
  @HealthCheck()
  check(@Query('downAfterMs') downAfterMs?: string) {
    return this.health.check([
      () => this.pgln.isHealthy('pgln', downAfterMs === undefined ? {} : { downAfterMs: Number(downAfterMs) }),
      () => this.pgln.isHealthy('pgln-audit', { connection: 'audit' }),
    ]);
  }
}

describe('PglnHealthIndicator (nestjs-pgln/terminus) behind a real /health endpoint', () => {
  let proxy: TcpProxy;
  proxyForEachTest((started) => (proxy = started));

  let t: TestApp;
  let base: string;
  beforeEach(async () => {
    t = await createTestApp(
      {
        imports: [TerminusModule, PglnModule.forRoot({ name: 'audit', connectionString: databaseUrl(), applicationName: unique('audit') })],
        controllers: [HealthController],
        providers: [Cache, PglnHealthIndicator],
      },
      { ...throughProxy(proxy), healthCheck: { intervalMs: 50, timeoutMs: 5_000 } },
    );
    await t.app.listen(0, '127.0.0.1');
    base = await t.app.getUrl();
  });
  afterEach(() => t.app.close());

  async function health(query = '') {
    const response = await fetch(`${base}/health${query}`);
    return { status: response.status, body: (await response.json()) as any };
  }

  it('is up while live, degraded within the grace, down past it, and up again once live', async () => {
    await waitFor('a health check of the LISTEN session', () => t.pgln.stats().lastHealthCheck);
    const live = await health();
    expect(live.status).toBe(200);
    expect(live.body.status).toBe('ok');
    expect(live.body.info.pgln).toEqual({
      status: 'up',
      state: 'live',
      stateForMs: expect.any(Number),
      notLiveForMs: 0,
      lastHealthCheckMs: expect.any(Number),
      notificationQueueUsage: expect.any(Number),
      queued: { [channel]: 0 },
    });
    expect(live.body.info['pgln-audit']).toMatchObject({ status: 'up', state: 'live', queued: {} });

    // Reconnecting, and kept from coming back.
    proxy.refuse(true);
    await terminate(admin, `${t.appName}-listener`);
    await waitFor('reconnecting', () => t.pgln.state === 'reconnecting');

    const degraded = await health('?downAfterMs=600000');
    expect(degraded.status).toBe(200);
    expect(degraded.body.status).toBe('degraded');
    expect(degraded.body.info.pgln).toMatchObject({
      status: 'degraded',
      state: 'reconnecting',
      message: expect.stringMatching(/^the listener is reconnecting, not live for \d+ ms \(down after 600000 ms\)$/),
    });
    // The other instance is live, and says so.
    expect(degraded.body.info['pgln-audit']).toMatchObject({ status: 'up', state: 'live' });

    const down = await waitFor('the grace to pass', async () => {
      const response = await health('?downAfterMs=100');
      return response.status === 503 && response;
    });
    expect(down.body.status).toBe('error');
    expect(down.body.error.pgln).toMatchObject({
      status: 'down',
      state: 'reconnecting',
      message: expect.stringMatching(/^the listener is reconnecting, not live for \d+ ms \(down after 100 ms\): what it keeps in sync may be stale$/),
    });
    expect(down.body.error.pgln.notLiveForMs).toBeGreaterThanOrEqual(100);

    proxy.refuse(false);
    await waitFor('live again', () => t.pgln.state === 'live');
    const back = await health('?downAfterMs=100');
    expect(back.status).toBe(200);
    expect(back.body.info.pgln).toMatchObject({ status: 'up', state: 'live' });
  });

  it('counts the grace from when the listener was last live, not from its last state change', async () => {
    const release = deferred();
    gate.hold = release.promise;
    try {
      // Never live again: reconnecting, then syncing (held), and back, again and again.
      await terminate(admin, `${t.appName}-listener`);
      await waitFor('syncing', () => t.pgln.state === 'syncing');
      const since = t.pgln.stats().notLiveSince!.getTime();
      await waitFor('the grace to pass', () => Date.now() - since > 200);
      await terminate(admin, `${t.appName}-listener`);
      await waitFor('syncing again', () => t.pgln.state === 'syncing' && t.pgln.stats().since.getTime() > since + 200);
      const flapping = await health('?downAfterMs=200');
      expect(flapping.status).toBe(503);
      expect(flapping.body.error.pgln).toMatchObject({ status: 'down', state: 'syncing' });
      expect(flapping.body.error.pgln.stateForMs).toBeLessThan(flapping.body.error.pgln.notLiveForMs);
    } finally {
      release.resolve();
      gate.hold = undefined;
    }
    await waitFor('live', () => t.pgln.state === 'live');
    expect((await health('?downAfterMs=200')).status).toBe(200);
  });

  it('is down once the listener is closed, and rejects a bad downAfterMs or an unknown instance', async () => {
    const indicator = t.get(PglnHealthIndicator);
    expect(() => indicator.isHealthy('pgln', { downAfterMs: -1 })).toThrow(PglnOptionsError);
    expect(() => indicator.isHealthy('pgln', { downAfterMs: Number.NaN })).toThrow(
      'PglnHealthIndicator.isHealthy: downAfterMs must be a number >= 0 (ms; default 30000), got NaN',
    );
    expect(() => indicator.isHealthy('pgln', { connection: 'reporting' })).toThrow(
      'PglnHealthIndicator.isHealthy: no PglnModule.forRoot({ name: "reporting" }) is imported',
    );
    await t.app.close();
    expect(indicator.isHealthy('pgln')).toMatchObject({
      pgln: { status: 'down', state: 'closed', message: 'the listener is closed: notifications are no longer received' },
    });
  });

  it('reports up within the grace on Terminus 11, whose HealthIndicatorService has no degraded()', async () => {
    // Terminus 11's session, as its HealthIndicatorService.check() returns it: up() and down() only.
    const terminus11 = {
      check: (key: string) => ({
        up: (data: object) => ({ [key]: { status: 'up', ...data } }),
        down: (data: object) => ({ [key]: { status: 'down', ...data } }),
      }),
    } as unknown as HealthIndicatorService;
    const indicator = new PglnHealthIndicator(terminus11, t.app.get(PglnHealthIndicator)['moduleRef']);
    proxy.refuse(true);
    await terminate(admin, `${t.appName}-listener`);
    await waitFor('reconnecting', () => t.pgln.state === 'reconnecting');
    expect(indicator.isHealthy('pgln')).toMatchObject({ pgln: { status: 'up', state: 'reconnecting' } });
    expect(indicator.isHealthy('pgln', { downAfterMs: 0 })).toMatchObject({ pgln: { status: 'down' } });
    proxy.refuse(false);
  });
});
