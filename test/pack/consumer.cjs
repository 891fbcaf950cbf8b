// A CommonJS application (as NestJS 11 projects are) loading the ESM package with require().
require('reflect-metadata');
const { Injectable, Module } = require('@nestjs/common');
const { NestFactory } = require('@nestjs/core');
const { OnNotification, PglnModule, PglnService } = require('nestjs-pgln');

let resolveReceived;
const done = new Promise((resolve) => (resolveReceived = resolve));

class Consumer {
  receive(payload) {
    resolveReceived(payload);
  }
}
// What TypeScript emits for @Injectable() and @OnNotification('pack_smoke_cjs').
OnNotification('pack_smoke_cjs')(Consumer.prototype, 'receive', Object.getOwnPropertyDescriptor(Consumer.prototype, 'receive'));
Injectable()(Consumer);

class AppModule {}
Module({ imports: [PglnModule.forRoot({ connectionString: process.env.DATABASE_URL })], providers: [Consumer] })(AppModule);

(async () => {
  const app = await NestFactory.createApplicationContext(AppModule, { logger: ['error', 'warn'] });
  await app.get(PglnService).notify('pack_smoke_cjs', 'from commonjs');
  const payload = await done;
  await app.close();
  console.log(JSON.stringify({ nest: require('@nestjs/core/package.json').version, payload }));
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
