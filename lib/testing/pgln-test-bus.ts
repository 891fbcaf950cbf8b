import { Injectable } from '@nestjs/common';
import { filter, firstValueFrom } from 'rxjs';
import { PglnError } from '../errors/index.js';
import type { PglnChannel, PglnState } from '../interfaces/index.js';
import { ENVELOPE_BYTES } from '../channel/exactly-once.js';
import { DEFAULT_CONNECTION } from '../pgln.constants.js';
import { channelName, isChannelDefinition } from '../pgln.define-channel.js';
import type { TransportListener } from '../pgln.transport.js';
import { TEST_BUS_CLOSED, TEST_BUS_NOT_STARTED } from '../pgln.messages.js';
import { assertChannel, encodePayload } from '../pgln.validation.js';
import { EMITTED_BY, MemoryTransport, type SentNotification } from './memory-transport.js';

/**
 * Drives `PglnTestingModule`'s in-memory server from a test: notifications from "another
 * service" (`emit`), connection losses (`reconnect`, `disconnect` / `connect`), and what the
 * application sent (`sent`).
 *
 * ```ts
 * const bus = moduleRef.get(PglnTestBus);
 * await bus.emit(Products, { op: 'upsert', id: 1, price: 5 });  // every handler of Products has run
 * expect(cache.get(1)?.price).toBe(5);
 * await bus.reconnect();                                        // out-of-sync handlers ran with 'reconnect'
 * expect(reloads).toEqual(['connect', 'reconnect']);
 * await products.setPrice(1, 6);                                // a provider that notifies
 * expect(bus.sent).toEqual([{ channel: 'products', payload: { op: 'upsert', id: 1, price: 6 } }]);
 * ```
 */
@Injectable()
export class PglnTestBus {
  /** @internal The in-memory server the instance's `PglnService` runs on. */
  readonly transport = new MemoryTransport();

  /**
   * Every notification sent through the instance's `PglnService` (`notify`, `notifyMany`), in
   * order: the channel's name and the payload as given (before encoding); `executor: true` for
   * those sent with `{ executor }`, which are delivered at once, as if that transaction committed.
   */
  get sent(): readonly SentNotification[] {
    return this.transport.sent;
  }

  /** Forgets what was sent so far. */
  clear(): void {
    this.transport.sent.length = 0;
  }

  /**
   * Delivers a notification as PostgreSQL would from another connection (`processId` 0) to every
   * listener of the channel, and resolves once each of its handlers has run (after any out-of-sync
   * handler it waits behind). The payload is encoded as `notify` encodes it, but not checked
   * against the channel's schema: a handler's rejection of a bad payload can be tested too. While
   * disconnected it is lost, as it would be.
   *
   * @throws PglnChannelError / PglnPayloadError for what PostgreSQL would refuse to send
   */
  async emit<TInput>(channel: PglnChannel<any, TInput>, payload: NoInfer<TInput>): Promise<void>;
  async emit(channel: string, payload?: string | object): Promise<void>;
  async emit(channel: string | PglnChannel, payload?: unknown): Promise<void> {
    const name = channelName(channel);
    assertChannel(name);
    const once = isChannelDefinition(channel) && channel.exactlyOnce === true;
    const text = encodePayload(name, payload, isChannelDefinition(channel), once ? ENVELOPE_BYTES : 0);
    this.transport.deliver([{ channel: name, payload: text, once }], EMITTED_BY);
    await this.listener('emit').settled(name);
  }

  /**
   * Resolves once every handler of the channel (of every channel, without one) has run what was
   * delivered so far: after `notify`, whose notification loops back, before asserting on its effect.
   */
  async settled(channel?: string | PglnChannel): Promise<void> {
    await this.listener('settled').settled(channel === undefined ? undefined : channelName(channel));
  }

  /**
   * What `SELECT pg_current_snapshot()` would answer now: a snapshot that saw every exactly-once
   * notification emitted or sent so far. For the fake executor a test gives an out-of-sync
   * handler's `event.snapshot(executor)`: `{ rows: [{ snapshot: bus.snapshot() }] }`.
   */
  snapshot(): string {
    return this.transport.snapshot();
  }

  /**
   * A connection loss and a reconnect: `state$` goes `reconnecting`, `syncing`, `live`; every
   * out-of-sync handler runs with `'reconnect'` while what is emitted meanwhile waits. Resolves
   * once the instance is live again.
   */
  async reconnect(): Promise<void> {
    await this.disconnect();
    await this.connect();
  }

  /**
   * Drops the LISTEN connection and keeps the server unreachable: the instance is `reconnecting`
   * (resolves once it is), what is emitted is lost, and `notify` rejects as with no server.
   */
  async disconnect(): Promise<void> {
    const listener = this.listener('disconnect');
    this.transport.disconnect();
    await this.until(listener, (state) => state !== 'live' && state !== 'syncing', 'disconnect');
  }

  /** Makes the server reachable again; resolves once the instance reconnected and is `live`. */
  async connect(): Promise<void> {
    const listener = this.listener('connect');
    this.transport.connect();
    await this.until(listener, (state) => state === 'live', 'connect');
  }

  /** The instance's listener, once it exists and has started (`app.init()`). */
  private listener(method: string): TransportListener {
    const { listener } = this.transport;
    if (!listener || listener.state === 'idle') throw new PglnError(TEST_BUS_NOT_STARTED(method));
    return listener;
  }

  /** Resolves at the first state `wanted` accepts; rejects if the instance closes first. */
  private async until(listener: TransportListener, wanted: (state: PglnState) => boolean, method: string): Promise<void> {
    const { state } = await firstValueFrom(listener.state$.pipe(filter(({ state }) => wanted(state) || state === 'closed')));
    if (!wanted(state)) throw new PglnError(TEST_BUS_CLOSED(method));
  }
}

/**
 * The injection token of an instance's {@link PglnTestBus}: the class itself for the default
 * instance, a string for a named one (`PglnTestingModule.forRoot({ name })`).
 */
export function getPglnTestBusToken(name: string = DEFAULT_CONNECTION): string | typeof PglnTestBus {
  return name === DEFAULT_CONNECTION ? PglnTestBus : `PglnTestBus(${name})`;
}
