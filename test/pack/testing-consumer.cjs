// The same unit test in a CommonJS application on NestJS 11 and @nestjs/testing 11: the
// application's PglnModule import is replaced by the in-memory PglnTestingModule; no database is
// reached (the configured URL points nowhere). Prints what it saw.
require('reflect-metadata');
const net = require('node:net');
const { Inject, Injectable, Module } = require('@nestjs/common');
const { Test } = require('@nestjs/testing');
const { OnNotification, OnOutOfSync, PglnModule, PglnService, defineChannel } = require('nestjs-pgln');
const { PglnTestBus, PglnTestingModule } = require('nestjs-pgln/testing');

const Prices = defineChannel('prices');

class PriceCache {
  constructor(pgln) {
    this.pgln = pgln;
    this.reasons = [];
    this.prices = new Map();
  }
  reload({ reason }) {
    this.reasons.push(reason);
  }
  apply({ id, cents }) {
    this.prices.set(id, cents);
  }
}
// What TypeScript emits for the decorators.
OnOutOfSync(Prices)(PriceCache.prototype, 'reload', Object.getOwnPropertyDescriptor(PriceCache.prototype, 'reload'));
OnNotification(Prices)(PriceCache.prototype, 'apply', Object.getOwnPropertyDescriptor(PriceCache.prototype, 'apply'));
Inject(PglnService)(PriceCache, undefined, 0);
Injectable()(PriceCache);

// Kept in a const: Nest matches an override by identity.
const pglnImport = PglnModule.forRootAsync({ useFactory: () => ({ connectionString: 'postgres://nowhere.invalid/app' }) });
class AppModule {}
Module({ imports: [pglnImport], providers: [PriceCache] })(AppModule);

// Counts every socket it would open: none is expected.
let sockets = 0;
const connect = net.Socket.prototype.connect;
net.Socket.prototype.connect = function (...args) {
  sockets++;
  return connect.apply(this, args);
};

(async () => {
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
  const result = { reasons: cache.reasons, prices: [...cache.prices], sent: bus.sent };
  await moduleRef.close();
  console.log(JSON.stringify({ nest: require('@nestjs/testing/package.json').version, sockets, ...result }));
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
