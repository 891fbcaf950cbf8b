import 'reflect-metadata';
import { Injectable, Module, type INestApplicationContext } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import * as current from 'nestjs-pgln';

/**
 * A Nest application context whose one provider has a method decorated with
 * `@OnNotification(channel)` for every channel, calling `handler`, and a no-op `@OnOutOfSync` on
 * the first: how an application listens, built from `lib` (this build, or the baseline's).
 */
export async function startPglnApp(
  channels: readonly string[],
  handler: (payload: string) => unknown,
  options: current.PglnModuleOptions,
  lib: typeof current = current,
): Promise<INestApplicationContext> {
  const { OnNotification, OnOutOfSync, PglnModule } = lib;
  class Receiver {
    receive(payload: string) {
      return handler(payload);
    }
    resync() {}
  }
  // What `@OnNotification(channel)` on `receive` for every channel, and `@OnOutOfSync`, amount to.
  const descriptor = (key: 'receive' | 'resync') => Object.getOwnPropertyDescriptor(Receiver.prototype, key)!;
  for (const channel of channels) OnNotification(channel)(Receiver.prototype, 'receive', descriptor('receive'));
  OnOutOfSync(channels[0]!)(Receiver.prototype, 'resync', descriptor('resync'));
  Injectable()(Receiver);
  @Module({ imports: [PglnModule.forRoot(options)], providers: [Receiver] })
  class ReceiverModule {}
  return NestFactory.createApplicationContext(ReceiverModule, { logger: false });
}
