import { Injectable, Module, type Type } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import {
  InjectPgln,
  OnNotification,
  OnOutOfSync,
  PglnModule,
  PglnOptionsError,
  PglnService,
  defineChannel,
  getPglnToken,
  type OutOfSyncEvent,
} from '../lib/index.js';
import { buildTestApp, createTestApp, initFailure, throughProxy } from './support/app.js';
import { adminPool, backends, databaseUrl, poolOnDroppedDatabase, terminate, unique } from './support/database.js';
import { CapturingLogger } from './support/logs.js';
import { TcpProxy } from './support/tcp-proxy.js';
import { Inbox, waitFor } from './support/wait.js';

const admin = adminPool();
/** A second database on the test server: notifications never cross databases. */
const auditDatabase = unique('pgln_audit');
const auditUrl = (() => {
  const url = new URL(databaseUrl());
  url.pathname = `/${auditDatabase}`;
  return url.toString();
})();
const audit = poolOnDroppedDatabase({ connectionString: auditUrl, application_name: 'pgln-test-audit', max: 2 });

beforeAll(() => admin.query(`CREATE DATABASE ${auditDatabase}`));
afterAll(async () => {
  await audit.end();
  await admin.query(`DROP DATABASE IF EXISTS ${auditDatabase} WITH (FORCE)`);
  await admin.end();
});

/** The same channel name on both databases. */
const channel = unique('events');
const Events = defineChannel<{ n: number }>(unique('typed'));

@Injectable()
class MainHandlers {
  readonly seen = new Inbox<string>();
  readonly resyncs = new Inbox<string>();
  @OnNotification(channel)
  onEvent(payload: string) {
    this.seen.push(payload);
  }
  @OnOutOfSync(channel)
  reload({ reason }: OutOfSyncEvent) {
    this.resyncs.push(reason);
  }
}

@Injectable()
class AuditHandlers {
  readonly seen = new Inbox<string>();
  readonly typed = new Inbox<number>();
  readonly resyncs = new Inbox<string>();
  constructor(
    @InjectPgln('audit') readonly audit: PglnService,
    readonly main: PglnService,
  ) {}
  @OnNotification(channel, { connection: 'audit' })
  onEvent(payload: string) {
    this.seen.push(payload);
  }
  @OnNotification(Events, { connection: 'audit' })
  onTyped({ n }: { n: number }) {
    this.typed.push(n);
  }
  @OnOutOfSync(channel, { connection: 'audit' })
  reload({ reason }: OutOfSyncEvent) {
    this.resyncs.push(reason);
  }
}

describe('several databases: PglnModule.forRoot({ name })', () => {
  let proxy: TcpProxy;
  beforeEach(async () => {
    proxy = await TcpProxy.forUrl(auditUrl).start();
  });
  afterEach(() => proxy.stop());

  /** The default instance on the test database, `audit` on the second one (its LISTEN through the proxy). */
  async function twoInstances() {
    const auditName = unique('audit');
    const t = await createTestApp(
      {
        providers: [MainHandlers, AuditHandlers],
        imports: [
          PglnModule.forRoot({
            name: 'audit',
            connectionString: auditUrl,
            applicationName: auditName,
            reconnect: { initialDelayMs: 20, maxDelayMs: 200 },
            ...throughProxy(proxy),
          }),
        ],
      },
    );
    return { ...t, auditName, main: t.get(MainHandlers), audited: t.get(AuditHandlers) };
  }

  it('gives each instance its own service, LISTEN connection, pool and handlers', async () => {
    const t = await twoInstances();
    try {
      const { audited, main } = t;
      expect(audited.main).toBe(t.pgln);
      expect(audited.audit).toBe(t.app.get(getPglnToken('audit')));
      expect(audited.audit).not.toBe(t.pgln);
      expect([t.pgln.name, audited.audit.name]).toEqual(['default', 'audit']);
      expect(main.resyncs.items).toEqual(['connect']);
      expect(audited.resyncs.items).toEqual(['connect']);
      expect(await backends(admin, `${t.appName}-listener`)).toHaveLength(1);
      expect(await backends(admin, `${t.auditName}-listener`)).toHaveLength(1);

      // Each service notifies through its own pool, on its own database: the same channel name
      // reaches only that database's listeners.
      await t.pgln.notify(channel, 'to main');
      await audited.audit.notify(channel, 'to audit');
      await audited.audit.notify(Events, { n: 7 });
      await audit.query('SELECT pg_notify($1, $2)', [channel, 'written to audit']);
      await audited.seen.until(2);
      await audited.typed.until(1);
      await main.seen.until(1);
      expect(main.seen.items).toEqual(['to main']);
      expect(audited.seen.items).toEqual(['to audit', 'written to audit']);
      expect(audited.typed.items).toEqual([7]);
      expect(t.pgln.stats().channels[Events.name]).toBeUndefined();
      expect(audited.audit.stats()).toMatchObject({ name: 'audit', channels: { [channel]: { received: 2, delivered: 2 } } });
      expect(t.logs.messages('log')).toEqual(
        expect.arrayContaining([
          `MainHandlers.onEvent {notification} -> ${channel}`,
          `AuditHandlers.onEvent {notification} -> ${channel} (audit)`,
          `AuditHandlers.reload {out-of-sync} -> ${channel} (audit)`,
        ]),
      );
    } finally {
      await t.app.close();
    }
    // Each instance shut down its own connections.
    expect(await backends(admin, `${t.appName}-listener`)).toEqual([]);
    expect(await backends(admin, `${t.auditName}-listener`)).toEqual([]);
    expect(await backends(admin, t.auditName)).toEqual([]);
  });

  it('reconnects one instance while the other keeps delivering', async () => {
    const t = await twoInstances();
    try {
      const { audited, main } = t;
      proxy.refuse(true);
      await terminate(admin, `${t.auditName}-listener`);
      await waitFor('the audit instance to notice', () => audited.audit.state === 'reconnecting');

      // The default instance neither noticed nor stopped.
      await t.pgln.notify(channel, 'during the outage');
      await main.seen.until(1);
      expect(main.seen.items).toEqual(['during the outage']);
      expect(t.pgln.state).toBe('live');
      expect(t.pgln.stats().reconnects).toBe(0);
      // Missed by the audit listener: its resync covers it.
      await audit.query('SELECT pg_notify($1, $2)', [channel, 'missed']);
      expect(audited.audit.state).toBe('reconnecting');

      proxy.refuse(false);
      await audited.resyncs.until(2);
      expect(audited.resyncs.items).toEqual(['connect', 'reconnect']);
      await waitFor('the audit instance to be live', () => audited.audit.state === 'live');
      await audited.audit.notify(channel, 'after');
      await audited.seen.until(1);
      expect(audited.seen.items).toEqual(['after']);
      expect(audited.audit.stats().reconnects).toBe(1);
      expect(main.resyncs.items).toEqual(['connect']);
    } finally {
      await t.app.close();
    }
  });

  it('fails init naming the handler when a decorator names an instance that does not exist', async () => {
    @Injectable()
    class Orphan {
      @OnOutOfSync(unique('orphan'), { connection: 'reporting' })
      reload() {}
    }
    const failure = await initFailure(await buildTestApp({ providers: [Orphan] }));
    expect(failure).toBeInstanceOf(PglnOptionsError);
    expect((failure as Error).message).toContain('Orphan.reload is decorated with @OnOutOfSync(');
    expect((failure as Error).message).toContain('for connection "reporting", but no PglnModule.forRoot({ name: "reporting" }) is imported (instances: "default")');
  });

  it('fails init when two instances share a name: every handler would run twice', async () => {
    const failure = await initFailure(
      await buildTestApp({ imports: [PglnModule.forRoot({ connectionString: databaseUrl(), applicationName: unique('twin') })] }),
    );
    expect(failure).toBeInstanceOf(PglnOptionsError);
    expect((failure as Error).message).toContain('PglnModule.forRoot() is imported twice with the name "default"');
  });

  it('rejects a name that is not a non-empty string, and so does the decorator option', () => {
    expect(() => InjectPgln(' ')).toThrow('InjectPgln: name must be a non-empty string naming the instance');
    for (const name of ['', ' ', 42, null]) {
      expect(() => PglnModule.forRoot({ name: name as string, connectionString: databaseUrl() })).toThrow(
        /name must be a non-empty string naming the instance \(e\.g\. 'audit'\), got/,
      );
    }
    expect(() => OnNotification('x', { connection: '' })).toThrow(
      'Handler of "x": connection must be the non-empty name given to PglnModule.forRoot({ name }), got ""',
    );
  });

  it('works with forRootAsync, where the name sits beside the factory', async () => {
    @Injectable()
    class AuditOnly {
      readonly seen = new Inbox<string>();
      constructor(@InjectPgln('audit') readonly audit: PglnService) {}
      @OnNotification(channel, { connection: 'audit' })
      onEvent(payload: string) {
        this.seen.push(payload);
      }
    }
    @Module({
      imports: [
        PglnModule.forRootAsync({ name: 'audit', useFactory: () => ({ connectionString: auditUrl, applicationName: unique('a') }) }),
      ],
      providers: [AuditOnly],
    })
    class AppModule {}
    const logs = new CapturingLogger();
    const build = async (providers: Type[] = []) =>
      (await Test.createTestingModule({ imports: [AppModule], providers }).setLogger(logs).compile()).createNestApplication({ logger: logs });

    // MainHandlers is bound to the default instance, which this application does not have.
    const failure = await (await build([MainHandlers])).init().catch((error: unknown) => error);
    expect((failure as Error).message).toContain('MainHandlers.onEvent is decorated with @OnNotification(');
    expect((failure as Error).message).toContain('(instances: "audit")');

    const app = await build();
    await app.init();
    try {
      const handler = app.get(AuditOnly);
      expect(handler.audit.name).toBe('audit');
      await handler.audit.notify(channel, 'async');
      await handler.seen.until(1);
      expect(handler.seen.items).toEqual(['async']);
    } finally {
      await app.close();
    }
  });
});
