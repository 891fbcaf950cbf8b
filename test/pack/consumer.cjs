// A CommonJS application (as NestJS 11 projects are) loading the ESM package with require(), with
// a Terminus 11 /health endpoint through nestjs-pgln/terminus. @opentelemetry/api is not installed.
// Its LISTEN connection goes through a forwarder of its own, which it breaks to see /health while
// the listener is reconnecting: up within the grace (Terminus 11 has no "degraded"), down past it.
require('reflect-metadata');
const net = require('node:net');
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
  strict() {
    return this.health.check([() => this.pgln.isHealthy('pgln', { downAfterMs: 0 })]);
  }
}
Inject(HealthCheckService)(HealthController, undefined, 0);
Inject(PglnHealthIndicator)(HealthController, undefined, 1);
Get()(HealthController.prototype, 'check', Object.getOwnPropertyDescriptor(HealthController.prototype, 'check'));
Get('strict')(HealthController.prototype, 'strict', Object.getOwnPropertyDescriptor(HealthController.prototype, 'strict'));
Controller('health')(HealthController);

/** Forwards to the database; while refusing, closes new connections at once. */
const upstream = new URL(process.env.DATABASE_URL);
const forwarded = new Set();
let refusing = false;
const forwarder = net.createServer((client) => {
  if (refusing) return void client.destroy();
  const server = net.connect(Number(upstream.port || 5432), upstream.hostname);
  for (const [socket, other] of [[client, server], [server, client]]) {
    forwarded.add(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => {
      forwarded.delete(socket);
      other.destroy();
    });
    socket.pipe(other);
  }
});

/** The application's module, its LISTEN connection through the forwarder on `port`. */
function appModule(port) {
  class AppModule {}
  Module({
    imports: [
      PglnModule.forRoot({ connectionString: process.env.DATABASE_URL, listener: { host: '127.0.0.1', port } }),
      TerminusModule,
    ],
    controllers: [HealthController],
    providers: [Consumer, PglnHealthIndicator],
  })(AppModule);
  return AppModule;
}

/** GET `path` of the app: its status and JSON body. */
async function get(app, path) {
  const response = await fetch(`${await app.getUrl()}${path}`);
  return { status: response.status, body: await response.json() };
}

/** Resolves once the service's state$ reports `state`. */
function reach(pgln, state) {
  return new Promise((resolve) => {
    const subscription = pgln.state$.subscribe((change) => {
      if (change.state !== state) return;
      resolve();
      queueMicrotask(() => subscription.unsubscribe());
    });
  });
}

(async () => {
  await new Promise((resolve) => forwarder.listen(0, '127.0.0.1', resolve));
  const app = await NestFactory.create(appModule(forwarder.address().port), { logger: ['error'] });
  await app.listen(0, '127.0.0.1');
  const pgln = app.get(PglnService);
  await pgln.notify('pack_smoke_cjs', 'from commonjs');
  const payload = await done;
  const health = await get(app, '/health');
  // The LISTEN connection breaks and cannot come back: reconnecting.
  refusing = true;
  const reconnecting = reach(pgln, 'reconnecting');
  for (const socket of forwarded) socket.destroy();
  await reconnecting;
  const during = { grace: await get(app, '/health'), strict: await get(app, '/health/strict') };
  refusing = false;
  await reach(pgln, 'live');
  await app.close();
  forwarder.close();
  console.log(JSON.stringify({ nest: require('@nestjs/core/package.json').version, terminus: require('@nestjs/terminus/package.json').version, payload, health, during }));
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
