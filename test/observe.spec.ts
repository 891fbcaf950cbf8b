import { Controller, Sse, type MessageEvent } from '@nestjs/common';
import { request, type IncomingMessage } from 'node:http';
import { connect, type Socket } from 'node:net';
import { map, type Observable, type Subscription } from 'rxjs';
import { z } from 'zod';
import { PglnChannelError, PglnService, defineChannel, type PglnChannelEvent } from '../lib/index.js';
import { buildTestApp, createTestApp, throughProxy, type TestApp } from './support/app.js';
import { adminPool, backends, databaseUrl, unique } from './support/database.js';
import { TcpProxy } from './support/tcp-proxy.js';
import { Inbox, waitFor } from './support/wait.js';

/**
 * `observe()`: a channel as an Observable of out-of-sync and notification events, and the same
 * streamed to browsers through an `@Sse()` route.
 */

const admin = adminPool();
afterAll(() => admin.end());

const send = (channel: string, payload: string) => admin.query('SELECT pg_notify($1, $2)', [channel, payload]);

/** Subscribes, collecting every event; `done` resolves when the stream completes or errors. */
function collect<T>(events: Observable<PglnChannelEvent<T>>) {
  const inbox = new Inbox<PglnChannelEvent<T>>();
  let end: { error?: unknown } | undefined;
  const subscription: Subscription = events.subscribe({
    next: inbox.push,
    error: (error: unknown) => void (end = { error }),
    complete: () => void (end = {}),
  });
  return { inbox, subscription, ended: () => end };
}

describe('PglnService.observe()', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await createTestApp();
  });
  afterAll(() => t.app.close());

  it('emits an out-of-sync event first, once listening, then the notifications in order, typed and validated by a definition', async () => {
    const Prices = defineChannel(unique('observe_typed'), { schema: z.object({ id: z.number(), price: z.number().positive() }) });
    const { inbox, subscription } = collect(t.pgln.observe(Prices));
    try {
      await inbox.until(1);
      await send(Prices.name, JSON.stringify({ id: 1, price: 2 }));
      await send(Prices.name, JSON.stringify({ id: 1, price: -1 })); // fails the schema: logged, skipped
      await send(Prices.name, JSON.stringify({ id: 2, price: 3 }));
      const events = await inbox.until(3);
      expect(events).toEqual([
        { type: 'out-of-sync', reason: 'listen' },
        { type: 'notification', payload: { id: 1, price: 2 }, processId: expect.any(Number) },
        { type: 'notification', payload: { id: 2, price: 3 }, processId: expect.any(Number) },
      ]);
    } finally {
      subscription.unsubscribe();
    }
  });

  it('emits an out-of-sync event again after resync() and after a reconnect', async () => {
    const proxy = await TcpProxy.forUrl(databaseUrl()).start();
    const app = await createTestApp({}, throughProxy(proxy));
    const channel = unique('observe_resync');
    const { inbox, subscription } = collect(app.pgln.observe(channel));
    try {
      await inbox.until(1);
      await app.pgln.resync(channel);
      proxy.resetAll();
      await inbox.until(3);
      await waitFor('live', () => app.pgln.state === 'live');
      await send(channel, 'after');
      const events = await inbox.until(4);
      expect(events.map((event) => (event.type === 'out-of-sync' ? event.reason : event.payload))).toEqual(['listen', 'manual', 'reconnect', 'after']);
    } finally {
      subscription.unsubscribe();
      await app.app.close();
      await proxy.stop();
    }
  });

  it('shares the one LISTEN connection between subscribers, and UNLISTENs once the last one unsubscribes', async () => {
    const channel = unique('observe_shared');
    const first = collect(t.pgln.observe(channel));
    const second = collect(t.pgln.observe(channel));
    await first.inbox.until(1);
    await second.inbox.until(1);
    expect(await backends(admin, `${t.appName}-listener`)).toHaveLength(1);
    expect(t.pgln.stats().channels[channel]!.subscriptions).toBe(2);
    first.subscription.unsubscribe();
    await waitFor('one subscriber left', () => t.pgln.stats().channels[channel]?.subscriptions === 1);
    await send(channel, 'to the second');
    expect((await second.inbox.until(2))[1]).toMatchObject({ payload: 'to the second' });
    expect(first.inbox.items).toHaveLength(1);
    second.subscription.unsubscribe();
    await waitFor('the channel to be unlistened', () => t.pgln.stats().channels[channel] === undefined);
  });

  it('completes when the channel is unlistened, and errors for a name PostgreSQL would reject', async () => {
    const channel = unique('observe_end');
    const { inbox, ended } = collect(t.pgln.observe(channel));
    await inbox.until(1);
    await t.pgln.unlisten(channel);
    await waitFor('the stream to complete', () => ended());
    expect(ended()).toEqual({});
    const bad = collect(t.pgln.observe('x'.repeat(64)));
    expect(bad.ended()?.error).toBeInstanceOf(PglnChannelError);
  });
});

/** A channel's events streamed to browsers, as the README shows; a small limit for the test of a client that stops reading. */
function sseController(channel: string) {
  @Controller()
  class Events {
    constructor(private readonly pgln: PglnService) {}

    @Sse('events', { maxPendingDataLength: 64 * 1024 })
    events(): Observable<MessageEvent> {
      return this.pgln.observe(channel).pipe(map((event) => ({ type: event.type, data: event })));
    }
  }
  return Events;
}

/** Opens the SSE stream: its events as they are parsed (`type` and data), and the response, to close. */
async function openStream(url: string): Promise<{ events: Inbox<{ type: string; data: PglnChannelEvent }>; response: IncomingMessage }> {
  const events = new Inbox<{ type: string; data: PglnChannelEvent }>();
  const response = await new Promise<IncomingMessage>((resolve, reject) => request(url, { headers: { accept: 'text/event-stream' } }, resolve).on('error', reject).end());
  let buffered = '';
  response.setEncoding('utf8');
  response.on('data', (chunk: string) => {
    buffered += chunk;
    let end: number;
    while ((end = buffered.indexOf('\n\n')) >= 0) {
      const block = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      const type = /^event: (.*)$/m.exec(block)?.[1];
      const data = /^data: (.*)$/m.exec(block)?.[1];
      if (type && data) events.push({ type, data: JSON.parse(data) });
    }
  });
  response.on('error', () => undefined);
  return { events, response };
}

describe('observe() returned from an @Sse() route', () => {
  it('streams out-of-sync first and then the notifications; a client that stops reading is dropped past the route’s limit, and reconnecting it gets out-of-sync first', async () => {
    const channel = unique('observe_sse');
    const built = await buildTestApp({ controllers: [sseController(channel)] });
    await built.app.listen(0, '127.0.0.1');
    const url = `${await built.app.getUrl()}/events`;
    try {
      const reader = await openStream(url);
      await reader.events.until(1);
      await send(channel, 'first');
      expect(await reader.events.until(2)).toEqual([
        { type: 'out-of-sync', data: { type: 'out-of-sync', reason: 'listen' } },
        { type: 'notification', data: { type: 'notification', payload: 'first', processId: expect.any(Number) } },
      ]);

      // A client that stops reading while changes keep coming: once the socket's buffers are full, dropped as
      // soon as 64 KB of events wait for it (up to 35 MB sent; far less is needed).
      const stalled = await stalledClient(url);
      const dropped = () => built.logs.messages('warn').some((line) => line.startsWith('The client is not reading its events'));
      const payload = 'x'.repeat(7_000);
      for (let sent = 0; sent < 5_000 && !dropped(); sent += 50) {
        await admin.query('SELECT pg_notify($1, $2 || i) FROM generate_series(1, 50) AS i', [channel, payload]);
      }
      expect(dropped()).toBe(true);
      // Its subscription went with it: the server holds nothing more for it.
      await waitFor('its subscription to be removed', () => built.pgln.stats().channels[channel]?.subscriptions === 1);
      stalled.socket.destroy();
      // The reading client was not affected, and the dropped one, reconnecting, is told to refetch first.
      expect(reader.events.items.length).toBeGreaterThan(2);
      const again = await openStream(url);
      expect((await again.events.until(1))[0]).toEqual({ type: 'out-of-sync', data: { type: 'out-of-sync', reason: 'listen' } });
      reader.response.destroy();
      again.response.destroy();
    } finally {
      await built.app.close();
    }
  });
});

/**
 * A client that reads the response's first event, then stops reading its socket (as a browser tab
 * whose machine went to sleep). Paused, it does not notice when the server drops it.
 */
async function stalledClient(url: string): Promise<{ socket: Socket }> {
  const { hostname, port, pathname } = new URL(url);
  const socket = connect(Number(port), hostname);
  socket.on('error', () => undefined);
  socket.write(`GET ${pathname} HTTP/1.1\r\nHost: ${hostname}\r\nAccept: text/event-stream\r\n\r\n`);
  let received = '';
  await new Promise<void>((resolve) => {
    const onData = (chunk: Buffer) => {
      received += chunk.toString();
      if (!received.includes('event: out-of-sync')) return;
      socket.removeListener('data', onData);
      socket.pause();
      resolve();
    };
    socket.on('data', onData);
  });
  return { socket };
}

