// A unit test as an application writes it, with the packed nestjs-pgln/testing and @nestjs/testing,
// type-checked against the published .d.ts: the application's PglnModule import is replaced by the
// in-memory PglnTestingModule; no database is reached (DATABASE_URL points nowhere). Prints what it saw.
import 'reflect-metadata';
import { Socket } from 'node:net';
import { Injectable, Module } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { OnNotification, OnOutOfSync, PglnModule, PglnService, defineChannel, type OutOfSyncEvent } from 'nestjs-pgln';
import { PglnTestBus, PglnTestingModule } from 'nestjs-pgln/testing';

// Counts every socket it would open: none is expected.
let sockets = 0;
const connect = Socket.prototype.connect;
Socket.prototype.connect = function (this: Socket, ...args: unknown[]) {
  sockets++;
  return (connect as (...args: unknown[]) => Socket).apply(this, args);
} as typeof connect;

const Prices = defineChannel<{ id: number; cents: number }>('prices');

@Injectable()
class PriceCache {
  readonly reasons: string[] = [];
  readonly prices = new Map<number, number>();
  constructor(readonly pgln: PglnService) {}

  @OnOutOfSync(Prices)
  reload({ reason }: OutOfSyncEvent): void {
    this.reasons.push(reason);
  }

  @OnNotification(Prices)
  apply({ id, cents }: { id: number; cents: number }): void {
    this.prices.set(id, cents);
  }
}

// Kept in a const: Nest matches an override by identity.
const pglnImport = PglnModule.forRootAsync({ useFactory: () => ({ connectionString: 'postgres://nowhere.invalid/app' }) });

@Module({ imports: [pglnImport], providers: [PriceCache] })
class AppModule {}

const moduleRef = await Test.createTestingModule({ imports: [AppModule] })
  .overrideModule(pglnImport)
  .useModule(PglnTestingModule.forRoot())
  .compile();
await moduleRef.init();
const bus = moduleRef.get(PglnTestBus);
const cache = moduleRef.get(PriceCache);
await bus.emit(Prices, { id: 1, cents: 250 });
await bus.reconnect();
await cache.pgln.notify(Prices, { id: 2, cents: 300 });
await bus.settled(Prices);
const result = { sockets, reasons: cache.reasons, prices: [...cache.prices], sent: bus.sent };
await moduleRef.close();
console.log(JSON.stringify(result));
