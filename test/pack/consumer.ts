// A separate application using the packed nestjs-pgln, type-checked against its published .d.ts.
import 'reflect-metadata';
import { Injectable, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import {
  OnNotification,
  OnOutOfSync,
  PglnModule,
  PglnService,
  type OutOfSyncEvent,
  type PglnNotification,
} from 'nestjs-pgln';

const received: string[] = [];
let resolveReceived: () => void;
const done = new Promise<void>((resolve) => (resolveReceived = resolve));

@Injectable()
class Consumer {
  reasons: string[] = [];
  @OnOutOfSync('pack_smoke')
  resync(event: OutOfSyncEvent) {
    this.reasons.push(event.reason);
  }
  @OnNotification('pack_smoke', { json: true })
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
await app.get(PglnService).notify('pack_smoke', { hello: 'world' });
await done;
const { reasons } = app.get(Consumer);
await app.close();
console.log(JSON.stringify({ reasons, received }));
