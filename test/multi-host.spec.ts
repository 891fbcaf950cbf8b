import pg from 'pg';
import { PglnOptionsError } from 'nestjs-pgln';
import { HostSelector } from '../lib/pgln.host-selector.js';
import { splitConnectionString } from '../lib/pgln.hosts.js';
import { resolveOptions } from '../lib/pgln.options.js';
import { createTestApp, type TestApp } from './support/app.js';
import { backends, unique } from './support/database.js';
import { LocalServer } from './support/replication.js';
import { TcpProxy } from './support/tcp-proxy.js';
import { recorder as recorderFor } from './support/recorder.js';
import { Inbox, StateLog, waitFor } from './support/wait.js';

/** Resolves the options as the module does, and ends the pool it created. */
async function resolved(options: Parameters<typeof resolveOptions>[0]) {
  const result = resolveOptions(options);
  await result.connection?.owned?.end(1_000, 1_000);
  return result;
}

describe('several hosts: the options', () => {
  it("splits libpq's multi-host URL, which node-postgres cannot parse, into its hosts", () => {
    expect(splitConnectionString('postgres://app:s3cret@h1:5432,h2:5433,[::1]/shop?target_session_attrs=read-write&sslmode=disable')).toEqual({
      single: 'postgres://app:s3cret@h1:5432/shop?sslmode=disable',
      // A host without a port gets the default one (as libpq), not the first host's.
      hosts: [{ host: 'h1', port: 5432 }, { host: 'h2', port: 5433 }, { host: '::1', port: 5432 }],
      targetSessionAttrs: 'read-write',
    });
    // One host is pg's to parse.
    expect(splitConnectionString('postgres://h1:5432/shop')).toEqual({ single: 'postgres://h1:5432/shop', hosts: [] });
  });

  it('makes the LISTEN connection and the pool choose among them, primary by default, and logs them without a password', async () => {
    const { connection } = await resolved({ connectionString: 'postgres://app:s3cret@h1:5432,h2:5433/shop' });
    expect(connection!.target).toBe('app@h1:5432,h2:5433/shop');
    expect(connection!.hosts).toMatchObject({ hosts: [{ host: 'h1', port: 5432 }, { host: 'h2', port: 5433 }], attrs: 'primary' });
    expect(connection!.poolHosts).toBe(connection!.hosts);
    expect(JSON.stringify(connection!.listener)).not.toContain('h1:5432,h2');

    const fromOption = await resolved({ connectionString: 'postgres://app@db/shop', hosts: [{ host: 'a' }, { host: 'b', port: 6432 }], targetSessionAttrs: 'read-write' });
    expect(fromOption.connection!.hosts).toMatchObject({ hosts: [{ host: 'a' }, { host: 'b', port: 6432 }], attrs: 'read-write' });
    expect(fromOption.connection!.target).toBe('app@a:5432,b:6432/shop');

    // One host: nothing to choose, no extra round trip; one given as hosts replaces the string's.
    const single = await resolved({ connectionString: 'postgres://app@db/shop' });
    expect(single.connection!.hosts).toBeUndefined();
    const one = await resolved({ connectionString: 'postgres://app@db/shop', hosts: [{ host: 'other', port: 6000 }] });
    expect(one.connection!.hosts).toMatchObject({ hosts: [{ host: 'other', port: 6000 }], attrs: 'any' });
  });

  it('a pg.Pool of your own stays yours: only the LISTEN connection chooses', async () => {
    const pool = new pg.Pool({ host: 'db', database: 'shop' });
    const { connection } = await resolved({ pool, hosts: [{ host: 'a' }, { host: 'b' }] });
    expect(connection!.pool).toBe(pool);
    expect(connection!.hosts).toMatchObject({ hosts: [{ host: 'a' }, { host: 'b' }], attrs: 'primary' });
    expect(connection!.poolHosts).toBeUndefined();
    await pool.end();
  });

  it('refuses what it cannot honour, saying what is allowed, never echoing the string', () => {
    const problems = (options: Parameters<typeof resolveOptions>[0]) => {
      try {
        resolveOptions(options);
      } catch (error) {
        expect(error).toBeInstanceOf(PglnOptionsError);
        return (error as Error).message;
      }
      throw new Error('accepted');
    };
    expect(problems({ connectionString: 'postgres://db/shop', hosts: [] })).toContain(
      'hosts must be a non-empty array of { host: string, port?: number }, got []',
    );
    expect(problems({ connectionString: 'postgres://db/shop', hosts: [{ host: 'a', port: 70_000 }] })).toContain('hosts must be');
    expect(problems({ connectionString: 'postgres://db/shop', targetSessionAttrs: 'standby' as never })).toContain(
      "targetSessionAttrs must be one of 'any', 'read-write', 'primary', got 'standby': LISTEN and NOTIFY are refused on a standby",
    );
    expect(problems({ connectionString: 'postgres://db/shop', hosts: [{ host: 'a,b' }, { host: 'c' }] })).toContain('hosts must be');
    expect(problems({ connectionString: 'postgres://app@h1,h2/shop?target_session_attrs=any' })).toContain(
      "targetSessionAttrs (or target_session_attrs) 'any' cannot go with several hosts: it could keep a standby",
    );
    expect(problems({ connectionString: 'postgres://app@h1,h2/shop', listener: { port: 5432 } })).toContain(
      'listener.host or listener.port cannot go with hosts or a multi-host connectionString',
    );
    expect(problems({ connectionString: 'postgres://app:s3cret@h1,h2:x/shop' })).toContain("the connection string's host list cannot be parsed: an entry is not host[:port]");
    const message = problems({ connectionString: 'postgres://app:s3cret@h1,h2/shop?target_session_attrs=prefer-standby' });
    expect(message).toContain("the connection string's target_session_attrs must be one of 'any', 'read-write', 'primary', got 'prefer-standby'");
    expect(message).not.toContain('s3cret');
  });
});

/** The PIDs of the app's LISTEN backends on a server. */
async function listenersOn(server: LocalServer, t: TestApp): Promise<number[]> {
  const pool = new pg.Pool({ connectionString: server.url, max: 1 });
  try {
    return (await backends(pool, `${t.appName}-listener`)).map(({ pid }) => pid);
  } finally {
    await pool.end();
  }
}

/** Sends `payloads` through the module, several at once (so that its pool opens new connections), and waits for them. */
async function roundTrip(t: TestApp, channel: string, received: Inbox<string>, payloads: string[]): Promise<void> {
  const before = received.items.length;
  await Promise.all(payloads.map((payload) => t.pgln.notify(channel, payload)));
  const heard = await received.until(before + payloads.length);
  expect(heard.slice(before).sort()).toEqual([...payloads].sort());
}

describe('several hosts: two servers of the tests’ own', () => {
  let first: LocalServer;
  let second: LocalServer;

  beforeAll(async () => {
    [first, second] = await Promise.all([LocalServer.primary(), LocalServer.primary()]);
  }, 120_000);
  afterAll(async () => {
    await Promise.all([first?.destroy(), second?.destroy()]);
  });

  it('stays on the first; the first stopped, the listener and notify move to the second with one resync and lose nothing after; the first back, nothing moves', async () => {
    const channel = unique('hosts');
    const Recorder = recorderFor(channel);
    const url = `postgres://postgres@127.0.0.1:${first.port},127.0.0.1:${second.port}/postgres`;
    const t = await createTestApp({ providers: [Recorder] }, { connectionString: url });
    try {
      const recorder = t.get(Recorder);
      const states = new StateLog(t.pgln);
      expect(await listenersOn(first, t)).toHaveLength(1);
      await roundTrip(t, channel, recorder.received, ['a1', 'a2', 'a3']);

      await first.stop();
      await states.reach('live', 2);
      expect(await listenersOn(second, t)).toHaveLength(1);
      expect(recorder.reasons).toEqual(['connect', 'reconnect']);
      expect(t.logs.messages('log').some((line) => line.includes(`at 127.0.0.1:${second.port}`))).toBe(true);
      await roundTrip(t, channel, recorder.received, Array.from({ length: 8 }, (_, i) => `b${i}`));

      await first.start();
      const [listener] = await listenersOn(second, t);
      await roundTrip(t, channel, recorder.received, Array.from({ length: 8 }, (_, i) => `c${i}`));
      expect(await listenersOn(second, t)).toEqual([listener]);
      expect(await listenersOn(first, t)).toEqual([]);
      expect(recorder.reasons).toEqual(['connect', 'reconnect']);
      expect(states.count('reconnecting')).toBe(1);
    } finally {
      await t.app.close();
    }
  }, 120_000);

  it("the module's pool sends where the LISTEN connection listens, whatever fails on the pool; without one, it searches from the first host", async () => {
    const [a, b] = [{ host: '127.0.0.1', port: first.port }, { host: '127.0.0.1', port: second.port }];
    // Two primaries at once (a split brain): a notification sent to the one the listener is not on would be lost.
    const selector = new HostSelector([a, b], 'primary', 2_000);
    const Client = selector.poolClient(pg.Client, { user: 'postgres', database: 'postgres', application_name: unique('probe') });
    const portOfNewConnection = async () => {
      const client = new Client({ user: 'postgres', database: 'postgres' });
      await client.connect();
      await client.end();
      return client.port;
    };
    selector.follow(b);
    expect(await portOfNewConnection()).toBe(second.port);
    // A pooled connection on it failed as a lost server's would: the pool still follows the listener, not the first host.
    selector.failed(Object.assign(new pg.Client(), b), Object.assign(new Error('terminating connection'), { code: '57P01', severity: 'FATAL' }));
    expect(await portOfNewConnection()).toBe(second.port);
    // The listener lost its connection: the pool searches as it will, from the first host.
    selector.follow(undefined);
    expect(await portOfNewConnection()).toBe(first.port);
  });

  it('skips a host that does not answer within the connect timeout; an attempt where none qualifies is one log line naming each', async () => {
    const channel = unique('hosts');
    const Recorder = recorderFor(channel);
    const proxy = await new TcpProxy('127.0.0.1', first.port).start();
    proxy.blackhole(true);
    const hosts = [{ host: '127.0.0.1', port: proxy.port }, { host: '127.0.0.1', port: second.port }];
    const t = await createTestApp({ providers: [Recorder] }, { connectionString: 'postgres://postgres@127.0.0.1/postgres', hosts, healthCheck: { timeoutMs: 500 } });
    try {
      const recorder = t.get(Recorder);
      const states = new StateLog(t.pgln);
      expect(await listenersOn(second, t)).toHaveLength(1);
      expect(t.logs.messages('log').some((line) => line.includes(`at 127.0.0.1:${second.port} (skipped 127.0.0.1:${proxy.port}: timeout expired`))).toBe(true);

      proxy.blackhole(false);
      proxy.refuse(true);
      await second.stop();
      const failed = () => t.logs.messages('warn').filter((line) => line.startsWith('Cannot connect to'));
      await waitFor('two attempts that found no host', () => failed().length >= 2);
      const pattern = new RegExp(
        `^Cannot connect to postgres@127\\.0\\.0\\.1:${proxy.port},127\\.0\\.0\\.1:${second.port}/postgres \\(attempt \\d+\\): ` +
          `no host answered as target_session_attrs=primary asks: 127\\.0\\.0\\.1:${proxy.port}: .+; 127\\.0\\.0\\.1:${second.port}: .+; retrying in \\d+ ms$`,
      );
      expect(failed().filter((line) => !pattern.test(line))).toEqual([]);
      await second.start();
      await states.reach('live', 2, 30_000);
      expect(recorder.reasons).toEqual(['connect', 'reconnect']);
      await roundTrip(t, channel, recorder.received, ['after']);
    } finally {
      await t.app.close();
      await proxy.stop();
    }
  }, 120_000);
});

describe('several hosts: a primary and its streaming standby', () => {
  let primary: LocalServer;
  let standby: LocalServer;

  beforeAll(async () => {
    primary = await LocalServer.primary();
    standby = await primary.standby();
  }, 120_000);
  afterAll(async () => {
    await standby?.destroy();
    await primary?.destroy();
  });

  it('skips the standby listed first; after it is promoted and the primary crashes, ends on the promoted one', async () => {
    const channel = unique('hosts');
    const Recorder = recorderFor(channel);
    const t = await createTestApp(
      { providers: [Recorder] },
      { connectionString: 'postgres://postgres@127.0.0.1/postgres', hosts: [{ host: '127.0.0.1', port: standby.port }, { host: '127.0.0.1', port: primary.port }] },
    );
    try {
      const recorder = t.get(Recorder);
      const states = new StateLog(t.pgln);
      expect(await listenersOn(primary, t)).toHaveLength(1);
      await roundTrip(t, channel, recorder.received, ['p1', 'p2']);

      await standby.promote();
      await primary.crash();
      await states.reach('live', 2, 30_000);
      expect(await standby.inRecovery()).toBe(false);
      expect(await listenersOn(standby, t)).toHaveLength(1);
      expect(recorder.reasons).toEqual(['connect', 'reconnect']);
      await roundTrip(t, channel, recorder.received, ['s1', 's2', 's3', 's4']);
    } finally {
      await t.app.close();
    }
  }, 120_000);
});
