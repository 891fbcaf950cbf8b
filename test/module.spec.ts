import { Injectable, Module } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import pg from 'pg';
import {
  OnNotification,
  PglnModule,
  PglnService,
  type PglnModuleOptions,
  type PglnOptionsFactory,
} from '../lib/index.js';
import { createTestApp, throughProxy } from './support/app.js';
import { TcpProxy } from './support/tcp-proxy.js';
import { adminPool, backends, databaseUrl, unique } from './support/database.js';
import { CapturingLogger } from './support/logs.js';
import { Inbox, waitFor } from './support/wait.js';

const admin = adminPool();
afterAll(() => admin.end());

/** A feature module that does not import PglnModule, yet injects PglnService. */
@Injectable()
class Publisher {
  constructor(readonly pgln: PglnService) {}
}
@Module({ providers: [Publisher], exports: [Publisher] })
class FeatureModule {}

@Injectable()
class Settings {
  readonly url = databaseUrl();
}
@Module({ providers: [Settings], exports: [Settings] })
class SettingsModule {}

@Injectable()
class OptionsFactory implements PglnOptionsFactory {
  constructor(private readonly settings: Settings) {}
  createPglnOptions(): PglnModuleOptions {
    return { connectionString: this.settings.url, applicationName: appNames.useClass };
  }
}

const appNames = { useFactory: unique('async'), useClass: unique('async'), useExisting: unique('async') };

describe('PglnModule.forRootAsync', () => {
  it.each([
    [
      'useFactory with imports and inject',
      {
        imports: [SettingsModule],
        inject: [Settings],
        useFactory: async (settings: Settings) => ({
          connectionString: settings.url,
          applicationName: appNames.useFactory,
        }),
      },
      appNames.useFactory,
    ],
    ['useClass', { imports: [SettingsModule], useClass: OptionsFactory }, appNames.useClass],
  ])('%s: provides a global PglnService that listens and notifies', async (_, asyncOptions, appName) => {
    const moduleRef = await Test.createTestingModule({
      imports: [PglnModule.forRootAsync(asyncOptions), FeatureModule],
    })
      .setLogger(new CapturingLogger())
      .compile();
    const app = moduleRef.createNestApplication();
    await app.init();
    try {
      const { pgln } = app.get(Publisher);
      expect(pgln).toBe(app.get(PglnService));
      expect(pgln.state).toBe('live');
      expect(await backends(admin, `${appName}-listener`)).toHaveLength(1);
      const inbox = new Inbox<string>();
      const channel = unique('async');
      await pgln.listen(channel, { onNotification: inbox.push });
      await pgln.notify(channel, 'through the feature module');
      expect(await inbox.until(1)).toEqual(['through the feature module']);
    } finally {
      await app.close();
    }
  });

  it('useExisting reuses a factory provided by an imported module', async () => {
    @Injectable()
    class ExistingFactory implements PglnOptionsFactory {
      createPglnOptions(): PglnModuleOptions {
        return { connectionString: databaseUrl(), applicationName: appNames.useExisting };
      }
    }
    @Module({ providers: [ExistingFactory], exports: [ExistingFactory] })
    class FactoryModule {}
    const moduleRef = await Test.createTestingModule({
      imports: [PglnModule.forRootAsync({ imports: [FactoryModule], useExisting: ExistingFactory })],
    })
      .setLogger(new CapturingLogger())
      .compile();
    const app = moduleRef.createNestApplication();
    await app.init();
    expect(await backends(admin, `${appNames.useExisting}-listener`)).toHaveLength(1);
    await app.close();
  });
});

describe('PglnModule.forRoot', () => {
  it('is not global with isGlobal: false', async () => {
    const local = Test.createTestingModule({
      imports: [PglnModule.forRoot({ connectionString: databaseUrl(), isGlobal: false }), FeatureModule],
    }).setLogger(new CapturingLogger());
    await expect(local.compile()).rejects.toThrow(/PglnService/);
  });

  it('is global by default, and reports as pgln-listener in pg_stat_activity', async () => {
    const moduleRef = await Test.createTestingModule({
      imports: [PglnModule.forRoot({ connectionString: databaseUrl() }), FeatureModule],
    })
      .setLogger(new CapturingLogger())
      .compile();
    const app = moduleRef.createNestApplication();
    await app.init();
    try {
      expect(app.get(Publisher).pgln).toBe(app.get(PglnService));
      const { rows } = await admin.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'pgln-listener'",
      );
      expect(rows[0]!.n).toBeGreaterThanOrEqual(1);
    } finally {
      await app.close();
    }
  });

  it('holds every LISTEN on one dedicated connection and notifies through the pool', async () => {
    const channels = [unique('one'), unique('two'), unique('three')];
    const inbox = new Inbox<{ channel: string; processId: number }>();
    @Injectable()
    class Many {
      @OnNotification(channels[0]!)
      @OnNotification(channels[1]!)
      @OnNotification(channels[2]!)
      receive(_: string, notification: { channel: string; processId: number }) {
        inbox.push(notification);
      }
    }
    const proxy = await TcpProxy.forUrl(databaseUrl()).start();
    const t = await createTestApp({ providers: [Many] }, throughProxy(proxy));
    try {
      const listeners = await backends(admin, `${t.appName}-listener`);
      expect(listeners).toHaveLength(1);
      // Every channel in one round trip, names quoted (the startup probe's own channel apart).
      expect(proxy.queries.filter((sql) => sql.startsWith('LISTEN') && !sql.includes('pgln_probe_'))).toEqual([
        channels.map((channel) => `LISTEN "${channel}"`).join('; '),
      ]);
      for (const channel of channels) await t.pgln.notify(channel, 'x');
      const received = await inbox.until(3);
      expect(received.map((n) => n.channel)).toEqual(channels);
      // The sender's backend is a pool connection, never the LISTEN connection.
      const senders = new Set(received.map((n) => n.processId));
      expect(senders.has(listeners[0]!.pid)).toBe(false);
      const pool = await backends(admin, t.appName);
      for (const pid of senders) expect(pool.map((b) => b.pid)).toContain(pid);
      expect(await backends(admin, `${t.appName}-listener`)).toHaveLength(1);
    } finally {
      await t.app.close();
      await proxy.stop();
    }
  });

  it('ends the pool it created, and leaves no connection behind', async () => {
    const t = await createTestApp();
    await t.pgln.notify(unique('nobody'), 'x');
    expect(await backends(admin, t.appName)).toHaveLength(1);
    await t.app.close();
    await waitFor('every backend of the app to go away', async () => {
      const [pool, listener] = await Promise.all([backends(admin, t.appName), backends(admin, `${t.appName}-listener`)]);
      return pool.length === 0 && listener.length === 0;
    });
    await expect(t.pgln.notify(unique('late'), 'x')).rejects.toThrow(/after calling end on the pool/);
  });

  it("uses a pg.Pool the user owns, takes its settings for the listener, and never ends it", async () => {
    const name = unique('owned');
    const pool = new pg.Pool({ connectionString: databaseUrl(), application_name: name });
    const t = await createTestApp({}, { pool });
    try {
      expect(await backends(admin, `${t.appName}-listener`)).toHaveLength(1);
      await t.pgln.notify(unique('nobody'), 'x');
      await t.app.close();
      const { rows } = await pool.query<{ one: number }>('SELECT 1 AS one');
      expect(rows[0]!.one).toBe(1);
    } finally {
      await pool.end();
    }
  });
});
