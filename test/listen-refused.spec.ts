import { PglnChannelError } from '../lib/index.js';
import { buildTestApp, createTestApp, initFailure } from './support/app.js';
import { adminPool, databaseUrl, unique } from './support/database.js';
import { recorder } from './support/recorder.js';
import { TcpProxy } from './support/tcp-proxy.js';
import { StateLog, waitFor } from './support/wait.js';

/**
 * A channel the server refuses to LISTEN on, while it accepts the others. Names pass the module's
 * checks (well-formed, at most 63 bytes) and can still be refused: in a database whose encoding is
 * not UTF8, a name with a character that encoding lacks fails with 22P05. One such channel must
 * not take the others down.
 */

const admin = adminPool();
const database = unique('latin1');
/** The test server's connection string, pointed at a LATIN1 database. */
let latin1Url: string;
const REFUSED = 'prices_€'; // no € in LATIN1
const SERVER_MESSAGE = /has no equivalent in encoding "LATIN1"/;

beforeAll(async () => {
  await admin.query(`CREATE DATABASE ${database} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0`);
  const url = new URL(databaseUrl());
  url.pathname = `/${database}`;
  latin1Url = url.toString();
});
afterAll(async () => {
  await admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
  await admin.end();
});

describe('a channel the server refuses to LISTEN on', () => {
  it('rejects that listen() with a PglnChannelError naming the channel and the server’s message; the other channels stay live', async () => {
    const good = unique('good');
    const Recorder = recorder(good);
    const t = await createTestApp({ providers: [Recorder] }, { connectionString: latin1Url });
    try {
      const states = new StateLog(t.pgln);
      const failure = await t.pgln.listen(REFUSED, { onNotification: () => undefined }).then(
        () => undefined,
        (error: unknown) => error,
      );
      expect(failure).toBeInstanceOf(PglnChannelError);
      expect((failure as PglnChannelError).channel).toBe(REFUSED);
      expect((failure as Error).message).toMatch(new RegExp(`^Cannot LISTEN on "${REFUSED}": the server refused it: .*${SERVER_MESSAGE.source}.*\\(22P05\\)`));
      // Nothing was lost: no reconnect, no resync, the good channel delivers.
      expect(t.pgln.state).toBe('live');
      expect(states.states).toEqual(['live']);
      await t.pgln.notify(good, 'still heard');
      expect(await t.get(Recorder).received.until(1)).toEqual(['still heard']);
      expect(t.get(Recorder).reasons).toEqual(['connect']);
      expect(Object.keys(t.pgln.stats().channels)).toEqual([good]);
      expect(t.logs.messages('error').some((line) => line.startsWith(`Cannot LISTEN on "${REFUSED}"`))).toBe(true);
      // A later listen() works as usual.
      const later = unique('later');
      const heard: string[] = [];
      await t.pgln.listen(later, { onNotification: (payload: string) => void heard.push(payload) });
      await t.pgln.notify(later, 'x');
      await waitFor('the later channel to deliver', () => heard.length === 1);
    } finally {
      await t.app.close();
    }
  });

  it('made while disconnected, is refused when the connection is back, and every other channel resyncs and goes live', async () => {
    const proxy = await TcpProxy.forUrl(latin1Url).start();
    const good = unique('good');
    const Recorder = recorder(good);
    const t = await createTestApp({ providers: [Recorder] }, { connectionString: proxy.url(latin1Url) });
    try {
      proxy.refuse(true);
      proxy.resetAll();
      await waitFor('the loss to be noticed', () => t.pgln.state === 'reconnecting');
      const refused = t.pgln.listen(REFUSED, { onNotification: () => undefined });
      const other = unique('other');
      const accepted = t.pgln.listen(other, { onNotification: () => undefined });
      proxy.refuse(false);
      await expect(refused).rejects.toThrow(PglnChannelError);
      await accepted;
      await waitFor('live again', () => t.pgln.state === 'live');
      expect(t.get(Recorder).reasons).toEqual(['connect', 'reconnect']);
      await t.pgln.notify(good, 'after');
      expect(await t.get(Recorder).received.until(1)).toEqual(['after']);
      expect(Object.keys(t.pgln.stats().channels).sort()).toEqual([good, other].sort());
    } finally {
      await t.app.close();
      await proxy.stop();
    }
  });

  it('fails app.init() when it is a decorated handler’s, naming the channel and the handler', async () => {
    const built = await buildTestApp({ providers: [recorder(unique('good')), recorder(REFUSED)] }, { connectionString: latin1Url });
    const failure = await initFailure(built);
    expect(failure).toBeInstanceOf(PglnChannelError);
    expect((failure as Error).message).toMatch(
      new RegExp(`^Cannot LISTEN on "${REFUSED}": the server refused it: .*${SERVER_MESSAGE.source}.*; its handlers are removed and will not be called \\(Recorder\\.resync, Recorder\\.receive\\)`),
    );
  });
});
