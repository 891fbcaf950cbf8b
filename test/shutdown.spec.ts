import { Injectable } from '@nestjs/common';
import { OnNotification, PglnClosedError } from '../lib/index.js';
import { createTestApp, throughProxy } from './support/app.js';
import { TcpProxy } from './support/tcp-proxy.js';
import { adminPool, backends, databaseUrl, unique } from './support/database.js';
import { Inbox, deferred, waitFor } from './support/wait.js';

const admin = adminPool();
afterAll(() => admin.end());

function blockingHandler(channel: string, release: Promise<void>, events: Inbox<string>) {
  @Injectable()
  class Blocking {
    @OnNotification(channel)
    async handle(payload: string) {
      events.push(`handler:${payload}:start`);
      await release;
      events.push(`handler:${payload}:end`);
    }
  }
  return Blocking;
}

describe('app.close()', () => {
  it('waits for a running handler, then UNLISTENs and disconnects', async () => {
    const channel = unique('closing');
    const release = deferred();
    const events = new Inbox<string>();
    const proxy = await TcpProxy.forUrl(databaseUrl()).start();
    const t = await createTestApp({ providers: [blockingHandler(channel, release.promise, events)] }, throughProxy(proxy));
    await t.pgln.notify(channel, '1');
    await events.until(1);

    const closing = t.app.close().then(() => events.push('closed'));
    await waitFor('shutdown to begin', () => t.pgln.state === 'closed');
    expect(await backends(admin, `${t.appName}-listener`)).toHaveLength(1);
    release.resolve();
    await closing;
    expect(events.items).toEqual(['handler:1:start', 'handler:1:end', 'closed']);
    expect(proxy.queries.at(-1)).toBe('UNLISTEN *');
    expect(proxy.openSockets).toBe(0);
    await proxy.stop();
    await waitFor('no backend of the app to remain', async () => {
      const [listener, pool] = await Promise.all([backends(admin, `${t.appName}-listener`), backends(admin, t.appName)]);
      return listener.length === 0 && pool.length === 0;
    });
  });

  it('gives up waiting after shutdownTimeoutMs, with a warning', async () => {
    const channel = unique('stuck');
    const release = deferred();
    const events = new Inbox<string>();
    const t = await createTestApp(
      { providers: [blockingHandler(channel, release.promise, events)] },
      { shutdownTimeoutMs: 50 },
    );
    try {
      await t.pgln.notify(channel, '1');
      await events.until(1);
      await t.app.close();
      expect(t.logs.messages('warn')).toContain(
        'Handlers still running after shutdownTimeoutMs (50 ms); closing the connection anyway',
      );
      expect(events.items).toEqual(['handler:1:start']);
    } finally {
      release.resolve();
    }
  });

  it('after close, listen() rejects with a PglnClosedError and unlisten() does nothing', async () => {
    const t = await createTestApp();
    await t.app.close();
    const late = t.pgln.listen(unique('late'), { onNotification: () => undefined });
    await expect(late).rejects.toBeInstanceOf(PglnClosedError);
    await expect(late).rejects.toThrow(/Cannot listen on ".*": the Pgln listener has been closed/);
    await expect(t.pgln.unlisten(unique('late'))).resolves.toBeUndefined();
  });
});
