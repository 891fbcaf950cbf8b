import { Injectable, Module } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { jest } from '@jest/globals';
import { Socket } from 'node:net';
import { firstValueFrom, toArray, take, type Observable } from 'rxjs';
import { z } from 'zod';
import {
  InjectPgln,
  OnNotification,
  OnOutOfSync,
  PglnModule,
  PglnPayloadError,
  PglnService,
  defineChannel,
  getPglnToken,
  type OutOfSyncEvent,
  type PglnStateChange,
} from 'nestjs-pgln';
import { PglnTestBus, PglnTestingModule, getPglnTestBusToken } from 'nestjs-pgln/testing';
import { deferred, waitFor } from './support/wait.js';

/**
 * `nestjs-pgln/testing`: the module on an in-memory bus, driven by PglnTestBus. No connection is
 * opened: every socket connect of these tests fails them.
 */

const connects = jest.spyOn(Socket.prototype, 'connect');
afterEach(() => expect(connects).not.toHaveBeenCalled());
afterAll(() => connects.mockRestore());

const Prices = defineChannel('prices', { schema: z.object({ id: z.number(), cents: z.number().int().nonnegative() }) });

/** A cache of prices, as an application would write it: reloaded from its "table", patched by notifications. */
@Injectable()
class PriceCache {
  readonly table = new Map<number, number>();
  prices = new Map<number, number>();
  readonly reloads: string[] = [];
  /** When set, a reload waits for it. */
  gate?: Promise<void>;

  constructor(readonly pgln: PglnService) {}

  @OnOutOfSync(Prices)
  async reload({ reason }: OutOfSyncEvent): Promise<void> {
    this.reloads.push(reason);
    const copy = new Map(this.table);
    await this.gate;
    this.prices = copy;
  }

  @OnNotification(Prices)
  apply({ id, cents }: { id: number; cents: number }): void {
    this.prices.set(id, cents);
  }

  async setPrice(id: number, cents: number): Promise<void> {
    this.table.set(id, cents);
    await this.pgln.notify(Prices, { id, cents });
  }
}

async function start(imports = [PglnTestingModule.forRoot()]) {
  const moduleRef = await Test.createTestingModule({ imports, providers: [PriceCache] }).compile();
  await moduleRef.init();
  return { moduleRef, cache: moduleRef.get(PriceCache), bus: moduleRef.get(PglnTestBus), pgln: moduleRef.get(PglnService) };
}

const states = (pgln: PglnService, count: number): Observable<PglnStateChange> => pgln.state$.pipe(take(count));

describe('PglnTestingModule', () => {
  let t: Awaited<ReturnType<typeof start>>;
  beforeEach(async () => {
    t = await start();
  });
  afterEach(() => t.moduleRef.close());

  it('runs the out-of-sync handlers at init, with reason connect, and is live', async () => {
    expect(t.cache.reloads).toEqual(['connect']);
    expect(t.pgln.state).toBe('live');
  });

  it('emit() resolves once the handlers ran; a payload failing the schema reaches no handler', async () => {
    await t.bus.emit(Prices, { id: 1, cents: 250 });
    expect(t.cache.prices.get(1)).toBe(250);
    await t.bus.emit(Prices, { id: 1, cents: -5 });
    expect(t.cache.prices.get(1)).toBe(250);
    expect(t.pgln.stats().invalidPayloads).toBe(1);
  });

  it('notify() is recorded in sent, as given, and loops back to the application\'s own handlers', async () => {
    await t.cache.setPrice(2, 100);
    expect(t.bus.sent).toEqual([{ channel: 'prices', payload: { id: 2, cents: 100 } }]);
    await t.pgln.notifyMany([{ channel: 'audit', payload: 'x' }], { executor: { query: async () => undefined } });
    expect(t.bus.sent.at(-1)).toEqual({ channel: 'audit', payload: 'x', executor: true });
    await t.bus.settled(Prices);
    expect(t.cache.prices.get(2)).toBe(100);
    t.bus.clear();
    expect(t.bus.sent).toEqual([]);
  });

  it('identical notifications of one notifyMany arrive once, as PostgreSQL collapses them in one transaction', async () => {
    const heard: string[] = [];
    await t.pgln.listen('collapse', { onNotification: (payload: string) => void heard.push(payload) });
    await t.pgln.notifyMany(['a', 'a', 'b', 'a'].map((payload) => ({ channel: 'collapse', payload })));
    await t.pgln.notify('collapse', 'a'); // another transaction: delivered again
    await t.bus.settled('collapse');
    expect(heard).toEqual(['a', 'b', 'a']);
    expect(t.bus.sent.map(({ payload }) => payload)).toEqual(['a', 'a', 'b', 'a', 'a']);
  });

  it('notify() still validates: a payload failing the schema is refused and not sent', async () => {
    await expect(t.pgln.notify(Prices, { id: 3, cents: 1.5 })).rejects.toThrow(PglnPayloadError);
    expect(t.bus.sent).toEqual([]);
  });

  it('reconnect(): reconnecting, syncing, live; the reload runs with reconnect and what is emitted meanwhile is applied after it', async () => {
    const seen = firstValueFrom(states(t.pgln, 4).pipe(toArray()));
    const gate = deferred<void>();
    t.cache.gate = gate.promise;
    t.cache.table.set(1, 100);
    const reconnected = t.bus.reconnect();
    await waitFor('the reload after the reconnect', () => t.cache.reloads.length === 2);
    const emitted = t.bus.emit(Prices, { id: 1, cents: 300 }); // the reload began before this change: applied after it
    gate.resolve();
    await reconnected;
    await emitted;
    expect(t.cache.reloads).toEqual(['connect', 'reconnect']);
    expect(t.cache.prices.get(1)).toBe(300);
    expect((await seen).map(({ state }) => state)).toEqual(['live', 'reconnecting', 'syncing', 'live']);
  });

  it('disconnect(): emit is lost and notify rejects until connect(), which resyncs', async () => {
    await t.bus.disconnect();
    expect(t.pgln.state).toBe('reconnecting');
    await t.bus.emit(Prices, { id: 4, cents: 1 });
    expect(t.cache.prices.has(4)).toBe(false);
    await expect(t.pgln.notify(Prices, { id: 4, cents: 2 })).rejects.toThrow(/ECONNREFUSED/);
    t.cache.table.set(4, 3);
    await t.bus.connect();
    expect(t.cache.prices.get(4)).toBe(3);
    expect(t.cache.reloads).toEqual(['connect', 'reconnect']);
  });
});

describe('largePayloads on the bus', () => {
  it('delivers payloads of any size, in order, as a database would through its table', async () => {
    const moduleRef = await Test.createTestingModule({ imports: [PglnTestingModule.forRoot({ largePayloads: {} })] }).compile();
    try {
      await moduleRef.init();
      const pgln = moduleRef.get(PglnService);
      const got: string[] = [];
      await pgln.listen('big', { onNotification: (payload: string) => void got.push(payload) });
      const large = 'x'.repeat(100_000);
      await pgln.notify('big', large);
      await pgln.notifyMany([{ channel: 'big', payload: 'small' }, { channel: 'big', payload: `${large}!` }]);
      await moduleRef.get(PglnTestBus).settled();
      expect(got).toEqual([large, 'small', `${large}!`]);
    } finally {
      await moduleRef.close();
    }
  });
});

describe('observe() on the bus', () => {
  it('completes when its channel goes in the very turn it went in sync', async () => {
    const moduleRef = await Test.createTestingModule({ imports: [PglnTestingModule.forRoot()] }).compile();
    try {
      await moduleRef.init();
      const pgln = moduleRef.get(PglnService);
      const bus = moduleRef.get(PglnTestBus);
      const events: string[] = [];
      const ended = new Promise<string>((resolve) =>
        pgln.observe('gone').subscribe({
          next: (event) => {
            events.push(event.type);
            // Emitted during the first read: held, and delivered the moment the read ends; its handler unlistens.
            if (event.type === 'out-of-sync') void bus.emit('gone', 'held');
            else void pgln.unlisten('gone');
          },
          complete: () => resolve('complete'),
          error: (error: Error) => resolve(`error: ${error.message}`),
        }),
      );
      expect(await ended).toBe('complete');
      expect(events).toEqual(['out-of-sync', 'notification']);
    } finally {
      await moduleRef.close();
    }
  });
});

describe('PglnTestingModule, exactly-once', () => {
  const Stock = defineChannel<{ id: number; count: number }>('stock', { exactlyOnce: true });

  @Injectable()
  class StockCache {
    readonly applied: number[] = [];
    release?: Promise<void>;
    constructor(readonly bus: PglnTestBus) {}

    @OnOutOfSync(Stock)
    async reload(event: OutOfSyncEvent): Promise<void> {
      await this.release;
      // The application's executor, faked: it answers as PostgreSQL would, with the bus's snapshot.
      await event.snapshot({ query: async () => ({ rows: [{ snapshot: this.bus.snapshot() }] }) });
    }

    @OnNotification(Stock)
    apply({ count }: { id: number; count: number }): void {
      this.applied.push(count);
    }
  }

  it('skips, after a reload, what the reload\'s snapshot saw, and applies what it did not', async () => {
    const moduleRef = await Test.createTestingModule({ imports: [PglnTestingModule.forRoot()], providers: [StockCache] }).compile();
    try {
      await moduleRef.init();
      const cache = moduleRef.get(StockCache);
      const bus = moduleRef.get(PglnTestBus);
      const release = deferred();
      cache.release = release.promise;
      const reconnected = bus.reconnect();
      await waitFor('the reload to start', () => moduleRef.get(PglnService).state === 'syncing');
      const seen = bus.emit(Stock, { id: 1, count: 5 }); // sent before the read: the reload saw it
      release.resolve();
      await Promise.all([reconnected, seen]);
      await bus.emit(Stock, { id: 1, count: 6 }); // sent after it
      expect(cache.applied).toEqual([6]);
      expect(moduleRef.get(PglnService).stats().skippedBySnapshot).toBe(1);
    } finally {
      await moduleRef.close();
    }
  });
});

describe('PglnTestingModule in place of the application\'s PglnModule', () => {
  // Nest matches an override by identity: the application keeps its import in a const.
  const pglnImport = PglnModule.forRootAsync({ useFactory: () => ({ connectionString: 'postgres://nowhere.invalid/app' }) });

  @Module({ imports: [pglnImport], providers: [PriceCache] })
  class AppModule {}

  it('overrideModule(pglnImport) runs the application on the bus', async () => {
    const moduleRef = await Test.createTestingModule({ imports: [AppModule] })
      .overrideModule(pglnImport)
      .useModule(PglnTestingModule.forRoot())
      .compile();
    try {
      await moduleRef.init();
      const bus = moduleRef.get(PglnTestBus);
      await bus.emit(Prices, { id: 7, cents: 70 });
      expect(moduleRef.get(PriceCache).prices.get(7)).toBe(70);
    } finally {
      await moduleRef.close();
    }
  });
});

describe('PglnTestingModule, named', () => {
  @Injectable()
  class AuditLog {
    readonly entries: string[] = [];
    constructor(@InjectPgln('audit') readonly pgln: PglnService) {}

    @OnNotification('audit', { connection: 'audit' })
    record(entry: string): void {
      this.entries.push(entry);
    }
  }

  it('forRoot({ name }) gives a service and a bus per instance', async () => {
    const moduleRef = await Test.createTestingModule({
      imports: [PglnTestingModule.forRoot(), PglnTestingModule.forRoot({ name: 'audit' })],
      providers: [AuditLog],
    }).compile();
    try {
      await moduleRef.init();
      const bus = moduleRef.get<PglnTestBus>(getPglnTestBusToken('audit'));
      await bus.emit('audit', 'created');
      await moduleRef.get(PglnTestBus).emit('audit', 'not this instance');
      const log = moduleRef.get(AuditLog);
      expect(log.entries).toEqual(['created']);
      await log.pgln.notify('audit', 'sent');
      expect(bus.sent).toEqual([{ channel: 'audit', payload: 'sent' }]);
      expect(moduleRef.get(PglnTestBus).sent).toEqual([]);
    } finally {
      await moduleRef.close();
    }
  });

  it('forRootAsync() takes its options from a factory, as PglnModule.forRootAsync() does', async () => {
    const moduleRef = await Test.createTestingModule({
      imports: [PglnTestingModule.forRootAsync({ name: 'audit', useFactory: () => ({ maxQueuedNotifications: 1 }) })],
      providers: [AuditLog],
    }).compile();
    try {
      await moduleRef.init();
      const pgln = moduleRef.get<PglnService>(getPglnToken('audit'));
      const bus = moduleRef.get<PglnTestBus>(getPglnTestBusToken('audit'));
      await bus.emit('audit', 'one');
      expect(moduleRef.get(AuditLog).entries).toEqual(['one']);
      expect(pgln.name).toBe('audit');
    } finally {
      await moduleRef.close();
    }
    // The factory's options are the ones checked and used: an invalid one fails as it would in production.
    const invalid = Test.createTestingModule({
      imports: [PglnTestingModule.forRootAsync({ name: 'audit', useFactory: () => ({ maxQueuedNotifications: 0 }) })],
    }).compile();
    await expect(invalid).rejects.toThrow('maxQueuedNotifications must be a whole number > 0, got 0');
  });

  it("the application's reconnect backoff does not slow the bus down", async () => {
    const moduleRef = await Test.createTestingModule({
      imports: [PglnTestingModule.forRoot({ name: 'audit', reconnect: { initialDelayMs: 60_000, maxDelayMs: 60_000 } })],
      providers: [AuditLog],
    }).compile();
    try {
      await moduleRef.init();
      const bus = moduleRef.get<PglnTestBus>(getPglnTestBusToken('audit'));
      // With the application's delays, the second and later attempts would wait up to a minute: the test would time out.
      await bus.disconnect();
      await expect(bus.emit('audit', 'lost')).resolves.toBeUndefined();
      await bus.connect();
      await bus.reconnect();
      await bus.emit('audit', 'after');
      expect(moduleRef.get(AuditLog).entries).toEqual(['after']);
    } finally {
      await moduleRef.close();
    }
  });

  it('the bus says what is wrong when the instance has not started', async () => {
    const moduleRef = await Test.createTestingModule({ imports: [PglnTestingModule.forRoot()] }).compile();
    await expect(moduleRef.get(PglnTestBus).reconnect()).rejects.toThrow('call app.init() (or moduleRef.init()) first');
    await moduleRef.close();
  });
});
