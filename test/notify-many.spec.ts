import { Injectable } from '@nestjs/common';
import { OnNotification, PglnChannelError, PglnPayloadError, type PglnNotification } from '../lib/index.js';
import { createTestApp, type TestApp } from './support/app.js';
import { databaseUrl, unique } from './support/database.js';
import { TcpProxy } from './support/tcp-proxy.js';
import { Inbox } from './support/wait.js';

describe('PglnService.notifyMany', () => {
  const first = unique('many');
  const second = unique('many');
  const received = new Inbox<string>();

  @Injectable()
  class Receiver {
    @OnNotification(first)
    @OnNotification(second)
    receive(payload: string, notification: PglnNotification) {
      received.push(`${notification.channel === first ? 'first' : 'second'}:${payload}`);
    }
  }

  let t: TestApp;
  let proxy: TcpProxy;
  beforeAll(async () => {
    proxy = await TcpProxy.forUrl(databaseUrl()).start();
    // The pool goes through the proxy too, so the test can see what notifyMany sends.
    t = await createTestApp({ providers: [Receiver] }, { pool: { connectionString: proxy.url(databaseUrl()) } });
  });
  afterAll(async () => {
    await t.app.close();
    await proxy.stop();
  });
  beforeEach(() => {
    received.items.length = 0;
  });

  it('sends many notifications in one statement, delivered in order', async () => {
    const sent = proxy.queries.length;
    await t.pgln.notifyMany([
      { channel: first, payload: '1' },
      { channel: second, payload: { n: 2 } },
      { channel: first, payload: '3' },
      { channel: first },
    ]);
    expect(await received.until(4)).toEqual(['first:1', 'second:{"n":2}', 'first:3', 'first:']);
    expect(proxy.queries.slice(sent)).toEqual([expect.stringMatching(/^SELECT pg_notify\(.*unnest/)]);
  });

  it('sends nothing when one item is invalid, and says which', async () => {
    const sent = proxy.queries.length;
    await expect(
      t.pgln.notifyMany([
        { channel: first, payload: 'fine' },
        { channel: first, payload: 'x'.repeat(8000) },
      ]),
    ).rejects.toThrow(PglnPayloadError);
    await expect(t.pgln.notifyMany([{ channel: '', payload: 'x' }])).rejects.toThrow(PglnChannelError);
    await expect(t.pgln.notifyMany('nope' as never)).rejects.toThrow(/notifyMany\(\) takes an array of \{ channel, payload \}, got string/);
    expect(proxy.queries.slice(sent)).toEqual([]);
    await t.pgln.notifyMany([{ channel: second, payload: 'after' }]);
    expect(await received.until(1)).toEqual(['second:after']);
  });

  it('does nothing for an empty list', async () => {
    const sent = proxy.queries.length;
    await t.pgln.notifyMany([]);
    expect(proxy.queries.slice(sent)).toEqual([]);
  });
});
