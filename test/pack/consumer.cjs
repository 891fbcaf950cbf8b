// A CommonJS application (as NestJS 11 projects are) loading the ESM package with require(), with
// a Terminus 11 /health endpoint through nestjs-pgln/terminus. @opentelemetry/api is not installed.
require('reflect-metadata');
const { Controller, Get, Inject, Injectable, Module } = require('@nestjs/common');
const { NestFactory } = require('@nestjs/core');
const { HealthCheckService, TerminusModule } = require('@nestjs/terminus');
const { OnNotification, PglnModule, PglnService } = require('nestjs-pgln');
const { PglnHealthIndicator } = require('nestjs-pgln/terminus');

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

class HealthController {
  constructor(health, pgln) {
    this.health = health;
    this.pgln = pgln;
  }
  check() {
    return this.health.check([() => this.pgln.isHealthy('pgln')]);
  }
}
Inject(HealthCheckService)(HealthController, undefined, 0);
Inject(PglnHealthIndicator)(HealthController, undefined, 1);
Get()(HealthController.prototype, 'check', Object.getOwnPropertyDescriptor(HealthController.prototype, 'check'));
Controller('health')(HealthController);

class AppModule {}
Module({
  imports: [PglnModule.forRoot({ connectionString: process.env.DATABASE_URL }), TerminusModule],
  controllers: [HealthController],
  providers: [Consumer, PglnHealthIndicator],
})(AppModule);

(async () => {
  const app = await NestFactory.create(AppModule, { logger: ['error', 'warn'] });
  await app.listen(0, '127.0.0.1');
  await app.get(PglnService).notify('pack_smoke_cjs', 'from commonjs');
  const payload = await done;
  const response = await fetch(`${await app.getUrl()}/health`);
  const health = { status: response.status, body: await response.json() };
  await app.close();
  console.log(JSON.stringify({ nest: require('@nestjs/core/package.json').version, terminus: require('@nestjs/terminus/package.json').version, payload, health }));
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
