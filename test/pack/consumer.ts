// A separate application using the packed nestjs-pgln, type-checked against its published .d.ts.
import 'reflect-metadata';
import { Injectable, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import {
  OnNotification,
  OnOutOfSync,
  PglnModule,
  PglnService,
  defineChannel,
  type OutOfSyncEvent,
  type PglnNotification,
} from 'nestjs-pgln';
import pg from 'pg';

/** A typed channel: notify's payload and the handler's parameter are checked against it. */
const Smoke = defineChannel<{ hello: string }>('pack_smoke');

const received: string[] = [];
let resolveReceived: () => void;
const done = new Promise<void>((resolve) => (resolveReceived = resolve));

@Injectable()
class Consumer {
  reasons: string[] = [];
  @OnOutOfSync(Smoke)
  resync(event: OutOfSyncEvent) {
    this.reasons.push(event.reason);
  }
  @OnNotification(Smoke)
  receive(payload: { hello: string }, notification: PglnNotification) {
    received.push(`${notification.channel}:${payload.hello}`);
    resolveReceived();
  }
}

@Module({
  imports: [PglnModule.forRoot({ connectionString: process.env.DATABASE_URL! })],
  providers: [Consumer],
})
class AppModule {}

const app = await NestFactory.createApplicationContext(AppModule, { logger: ['error', 'warn'] });
// Inside a transaction of the application's own connection: delivered at COMMIT.
const client = new pg.Client({ connectionString: process.env.DATABASE_URL });
await client.connect();
await client.query('BEGIN');
await app.get(PglnService).notify(Smoke, { hello: 'world' }, { executor: client });
await client.query('COMMIT');
await client.end();
await done;
const { reasons } = app.get(Consumer);
await app.close();
console.log(JSON.stringify({ reasons, received }));
