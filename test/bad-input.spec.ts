import { Injectable } from '@nestjs/common';
import pg from 'pg';
import {
  OnNotification,
  OnOutOfSync,
  PglnChannelError,
  PglnError,
  PglnOptionsError,
  PglnPayloadError,
  type PglnModuleOptions,
} from '../lib/index.js';
import { resolveOptions } from '../lib/pgln.options.js';
import { assertChannel, encodePayload } from '../lib/pgln.validation.js';
import { createTestApp, type TestApp } from './support/app.js';
import { databaseUrl, unique } from './support/database.js';
import { Inbox } from './support/wait.js';

/**
 * What users get wrong, table by table. Each mistake gets a clear error at the right moment
 * (class definition, module creation, before sending, at delivery), and nothing else breaks.
 */

const circular = (): object => {
  const value: Record<string, unknown> = {};
  value.self = value;
  return value;
};

const BAD_CHANNELS: [string, unknown, RegExp][] = [
  ['empty', '', /Channel name must not be empty/],
  ['64 bytes', 'x'.repeat(64), /is 64 bytes in UTF-8; PostgreSQL keeps at most 63 bytes/],
  ['22 three-byte characters (66 bytes, 22 characters)', '€'.repeat(22), /is 66 bytes in UTF-8; PostgreSQL keeps at most 63 bytes/],
  ['a NUL', 'a\0b', /contains a NUL character/],
  // pg would send U+FFFD: notifications would come back under another name, and the health check would loop.
  ['a lone high surrogate', 'a\uD800', /is not well-formed UTF-16: it holds a lone surrogate/],
  ['a lone low surrogate', '\uDC00b', /is not well-formed UTF-16: it holds a lone surrogate/],
  ['not a string', 42, /must be a string, got number/],
  ['null', null, /must be a string, got null/],
];

const GOOD_CHANNELS: [string, string][] = [
  ['63 ASCII bytes', 'x'.repeat(63)],
  ['21 three-byte characters (63 bytes)', '€'.repeat(21)],
  ['mixed case, spaces and quotes', `Order "events" it's`],
  ['a surrogate pair (an emoji, 4 bytes)', 'orders 📦'],
  ['would-be SQL', '"; DROP TABLE x; --'],
];

const BAD_PAYLOADS: [string, unknown, RegExp][] = [
  ['exactly 8000 bytes', 'a'.repeat(8000), /is 8000 bytes in UTF-8; pg_notify accepts at most 7999 bytes/],
  ['8000 bytes with a 2-byte character at the boundary', 'a'.repeat(7998) + 'é', /is 8000 bytes in UTF-8/],
  ['a 3-byte character crossing the boundary (8001 bytes)', 'a'.repeat(7998) + '€', /is 8001 bytes in UTF-8/],
  ['an object encoding to 8011 bytes', { text: 'a'.repeat(8000) }, /is 8011 bytes in UTF-8/],
  ['a NUL in a string', 'a\0b', /contains a NUL character/],
  ['a lone surrogate in a string', 'price \uD83D', /is not well-formed UTF-16: it holds a lone surrogate/],
  ['a circular object', circular(), /cannot be encoded as JSON: .*circular/i],
  ['a function', () => 1, /cannot be encoded as JSON: function has no JSON form/],
];

const GOOD_PAYLOADS: [string, string][] = [
  ['exactly 7999 ASCII bytes', 'a'.repeat(7999)],
  ['7999 bytes ending in a 2-byte character', 'a'.repeat(7997) + 'é'],
  ['7999 bytes of 3-byte characters and ASCII', '€'.repeat(2666) + 'a'],
  ['empty', ''],
];

describe('channel names', () => {
  it.each(BAD_CHANNELS)('rejects %s, naming the limit', (_, channel, message) => {
    expect(() => assertChannel(channel)).toThrow(PglnChannelError);
    expect(() => assertChannel(channel)).toThrow(message);
  });

  it.each(GOOD_CHANNELS)('accepts %s', (_, channel) => {
    expect(() => assertChannel(channel)).not.toThrow();
  });

  it.each([
    ['@OnNotification', OnNotification, 'y'.repeat(64), /64 bytes in UTF-8; PostgreSQL keeps at most 63 bytes/],
    ['@OnOutOfSync', OnOutOfSync, 'cache\uD800', /is not well-formed UTF-16/],
  ] as const)('rejects a bad name in %s when the class is defined', (_, decorator, name, message) => {
    expect(() => {
      class Bad {
        @decorator(name)
        handle() {}
      }
      return Bad;
    }).toThrow(message);
  });
});

describe('payloads', () => {
  it.each(BAD_PAYLOADS)('rejects %s', (_, payload, message) => {
    expect(() => encodePayload('c', payload)).toThrow(PglnPayloadError);
    expect(() => encodePayload('c', payload)).toThrow(message);
  });

  it.each(GOOD_PAYLOADS)('accepts %s unchanged', (_, payload) => {
    expect(encodePayload('c', payload)).toBe(payload);
  });

  it('sends undefined as the empty payload and other values as JSON', () => {
    expect(encodePayload('c', undefined)).toBe('');
    expect(encodePayload('c', { id: 1, name: 'ä' })).toBe('{"id":1,"name":"ä"}');
    expect(encodePayload('c', [1, 2])).toBe('[1,2]');
  });
});

describe('options: rejected when the module is created, every problem listed', () => {
  const url = () => databaseUrl();
  const OPTIONS: [string, () => Partial<PglnModuleOptions>, RegExp][] = [
    ['no connection settings', () => ({}), /no connection settings: give connectionString, or pool/],
    ['both pool and connectionString', () => ({ connectionString: url(), pool: { max: 2 } }), /either connectionString, or pool/],
    ['an empty connectionString', () => ({ connectionString: ' ' }), /connectionString must be a non-empty string/],
    ['a connection string given as pool (never echoed)', () => ({ pool: 'postgres://app:s3cret@db/app' as never }), /pool must be a pg.Pool or a PoolConfig object, got a string \(give a connection string as connectionString\)$/m],
    ['a connection string given as listener', () => ({ connectionString: url(), listener: 'postgres://app:s3cret@db/app' as never }), /listener must be a pg ClientConfig object, got a string/],
    ['a zero notify timeout', () => ({ connectionString: url(), notifyTimeoutMs: 0 }), /notifyTimeoutMs must be a number > 0 \(ms\), got 0/],
    ['a negative reconnect delay', () => ({ connectionString: url(), reconnect: { initialDelayMs: -1 } }), /reconnect.initialDelayMs must be a number > 0 \(ms\), got -1/],
    ['a zero maximum delay', () => ({ connectionString: url(), reconnect: { maxDelayMs: 0 } }), /reconnect.maxDelayMs must be a number > 0 \(ms\), got 0/],
    ['a maximum below the initial delay', () => ({ connectionString: url(), reconnect: { initialDelayMs: 500, maxDelayMs: 100 } }), /reconnect.maxDelayMs \(100\) must be at least reconnect.initialDelayMs \(500\)/],
    ['a zero health-check interval', () => ({ connectionString: url(), healthCheck: { intervalMs: 0 } }), /healthCheck.intervalMs must be a number > 0 \(ms\), got 0/],
    ['a negative health-check timeout', () => ({ connectionString: url(), healthCheck: { timeoutMs: -5 } }), /healthCheck.timeoutMs must be a number > 0 \(ms\), got -5/],
    ['a zero startup timeout', () => ({ connectionString: url(), startupTimeoutMs: 0 }), /startupTimeoutMs must be a number > 0 \(ms\), got 0/],
    ['a fractional queue limit', () => ({ connectionString: url(), maxQueuedNotifications: 2.5 }), /maxQueuedNotifications must be a whole number > 0, got 2.5/],
    ['a NaN shutdown timeout', () => ({ connectionString: url(), shutdownTimeoutMs: Number.NaN }), /shutdownTimeoutMs must be a number >= 0 \(ms\), got NaN/],
    ['a negative slow-handler threshold', () => ({ connectionString: url(), slowHandlerMs: -1 }), /slowHandlerMs must be a number > 0 \(ms\), got -1/],
    ['a startup timeout beyond what a Node.js timer can wait (it would fire after 1 ms)', () => ({ connectionString: url(), startupTimeoutMs: 2 ** 31 }), /startupTimeoutMs must be at most 2147483647 ms \(about 24.8 days, the longest timer Node.js keeps\), got 2147483648/],
    ['an infinite health-check interval', () => ({ connectionString: url(), healthCheck: { intervalMs: Number.POSITIVE_INFINITY } }), /healthCheck.intervalMs must be at most 2147483647 ms/],
    ['a huge shutdown timeout', () => ({ connectionString: url(), shutdownTimeoutMs: 1e12 }), /shutdownTimeoutMs must be at most 2147483647 ms/],
    ['a reconnect delay below 1 ms (every delay would round to 0)', () => ({ connectionString: url(), reconnect: { initialDelayMs: 0.5, maxDelayMs: 0.9 } }), /reconnect.initialDelayMs must be at least 1 \(ms\), got 0.5: below it every delay rounds to 0/],
    ['no connect timeout for the LISTEN connection', () => ({ connectionString: url(), listener: { connectionTimeoutMillis: 0 } }), /listener.connectionTimeoutMillis must be a number > 0 \(ms\), got 0/],
    ['a huge pg query_timeout for the LISTEN connection', () => ({ connectionString: url(), listener: { query_timeout: 2 ** 31 } }), /listener.query_timeout must be at most 2147483647 ms/],
    ['a huge idle timeout for the pool', () => ({ pool: { connectionString: url(), idleTimeoutMillis: 2 ** 32 } }), /pool.idleTimeoutMillis must be at most 2147483647 ms/],
    ['a queue usage warning given as a percentage', () => ({ connectionString: url(), healthCheck: { queueUsageWarning: 50 } }), /healthCheck.queueUsageWarning must be a fraction > 0 and <= 1 \(0.5 warns at half full\), got 50/],
    ['an empty applicationName', () => ({ connectionString: url(), applicationName: '' }), /applicationName must be a non-empty string/],
    ['no connect timeout for the module’s pool (its attempt to reach a dead server would never end)', () => ({ pool: { connectionString: url(), connectionTimeoutMillis: 0 } }), /pool.connectionTimeoutMillis must be a number > 0 \(ms\), got 0: 0 means no limit/],
    ['a pg.Client given as pool (one connection, never replaced once it fails)', () => ({ pool: new pg.Client({ connectionString: url() }) as never }), /pool must be a pg.Pool or a PoolConfig object, got a pg.Client/],
    ['a sub-millisecond health-check interval', () => ({ connectionString: url(), healthCheck: { intervalMs: 0.5 } }), /healthCheck.intervalMs must be at least 1 \(ms\), got 0.5/],
    ['a sub-millisecond health-check timeout', () => ({ connectionString: url(), healthCheck: { timeoutMs: 0.01 } }), /healthCheck.timeoutMs must be at least 1 \(ms\), got 0.01/],
    ['a sub-millisecond notify timeout', () => ({ connectionString: url(), notifyTimeoutMs: 0.5 }), /notifyTimeoutMs must be at least 1 \(ms\), got 0.5/],
  ];

  it.each(OPTIONS)('%s', (_, options, message) => {
    expect(() => resolveOptions(options() as PglnModuleOptions)).toThrow(PglnOptionsError);
    expect(() => resolveOptions(options() as PglnModuleOptions)).toThrow(message);
    expect(() => resolveOptions(options() as PglnModuleOptions)).not.toThrow(/s3cret/);
  });

  it('an option given as undefined takes its default, at every level (a config value that is not set, say)', () => {
    const withoutPool = ({ connection, ...rest }: ReturnType<typeof resolveOptions>) => ({ ...rest, listener: connection!.listener, target: connection!.target });
    const defaults = resolveOptions({ connectionString: url() });
    const given = resolveOptions({
      connectionString: url(),
      applicationName: undefined,
      notifyTimeoutMs: undefined,
      shutdownTimeoutMs: undefined,
      startupTimeoutMs: undefined,
      maxQueuedNotifications: undefined,
      slowHandlerMs: undefined,
      reconnect: { initialDelayMs: undefined, maxDelayMs: undefined },
      healthCheck: { intervalMs: undefined, timeoutMs: undefined, queueUsageWarning: undefined },
      telemetry: { traces: undefined, metrics: undefined },
      listener: { connectionTimeoutMillis: undefined, keepAlive: undefined, application_name: undefined },
    });
    expect(withoutPool(given)).toEqual(withoutPool(defaults));
    expect(given.connection!.listener.connectionTimeoutMillis).toBe(5_000);
    const { pool } = resolveOptions({ pool: { connectionString: url(), connectionTimeoutMillis: undefined, max: undefined } }).connection!;
    // The pool's connect timeout defaults to notifyTimeoutMs; pg-pool's own default for max.
    expect((pool as pg.Pool & { options: pg.PoolConfig }).options).toMatchObject({ connectionTimeoutMillis: 10_000, max: 10 });
    return Promise.all([defaults.connection!.pool.end(), given.connection!.pool.end(), pool.end()]);
  });

  it('lists every problem in one error', () => {
    expect(() =>
      resolveOptions({ connectionString: url(), pool: {}, reconnect: { initialDelayMs: -1 }, slowHandlerMs: 0 }),
    ).toThrow(/Invalid PglnModule options:\n {2}- give connection settings once.*\n {2}- reconnect.initialDelayMs.*\n {2}- slowHandlerMs/s);
  });

  it('fails app start with that error, before connecting', async () => {
    const pool = new pg.Pool({ connectionString: databaseUrl() });
    try {
      await expect(createTestApp({}, { pool, healthCheck: { intervalMs: 0 } })).rejects.toThrow(
        /Invalid PglnModule options:\n {2}- healthCheck.intervalMs must be a number > 0/,
      );
      expect(pool.totalCount).toBe(0);
    } finally {
      await pool.end();
    }
  });
});

describe('bad input against a running listener', () => {
  const channel = unique('bad_input');
  const json = unique('bad_input_json');
  const raw = new Inbox<string>();
  const parsed = new Inbox<unknown>();

  @Injectable()
  class Receiver {
    @OnNotification(channel)
    receive(payload: string) {
      raw.push(payload);
    }
    @OnNotification(json, { json: true })
    receiveJson(payload: unknown) {
      parsed.push(payload);
    }
  }

  let t: TestApp;
  beforeAll(async () => {
    t = await createTestApp({ providers: [Receiver] });
  });
  afterAll(() => t.app.close());

  it.each(BAD_CHANNELS)('notify, notifyMany, listen and unlisten reject a channel name that is %s, and delivery goes on', async (name, bad, message) => {
    await expect(t.pgln.notify(bad as string, 'x')).rejects.toThrow(message);
    await expect(t.pgln.notifyMany([{ channel, payload: 'fine' }, { channel: bad as string, payload: 'x' }])).rejects.toThrow(message);
    await expect(t.pgln.listen(bad as string, { onNotification: () => undefined })).rejects.toThrow(message);
    await expect(t.pgln.unlisten(bad as string)).rejects.toThrow(message);
    expect(t.pgln.state).toBe('live');
    await t.pgln.notify(channel, `after ${name}`);
    await waitForPayload(raw, `after ${name}`);
  });

  it.each([null, 'text', 42])('notifyMany rejects an item that is not { channel, payload } (%p) with a PglnError naming it', async (item) => {
    const failure = await t.pgln.notifyMany([{ channel, payload: 'fine' }, item as never]).then(() => undefined, (error: unknown) => error);
    expect(failure).toBeInstanceOf(PglnError);
    expect((failure as Error).message).toBe(`notifyMany(): item 1 must be an object { channel, payload }, got ${item === null ? 'null' : typeof item}.`);
    expect(() => t.pgln.notifyManyQuery([item as never])).toThrow(PglnError);
  });

  it.each(BAD_PAYLOADS)('notify rejects a payload with %s, and delivery goes on', async (name, bad, message) => {
    await expect(t.pgln.notify(channel, bad as string)).rejects.toThrow(message);
    await t.pgln.notify(channel, `after ${name}`);
    await waitForPayload(raw, `after ${name}`);
  });

  it.each(GOOD_PAYLOADS)('PostgreSQL accepts a payload of %s and delivers it intact', async (_, payload) => {
    await t.pgln.notify(channel, payload);
    await waitForPayload(raw, payload);
  });

  it('skips a payload that is not valid JSON for a json: true handler, logging it, and goes on', async () => {
    await t.pgln.notify(json, '{"broken": ');
    await t.pgln.notify(json, { fine: true });
    await parsed.until(1);
    expect(parsed.items).toEqual([{ fine: true }]);
    const errors = t.logs.messages('error');
    expect(errors).toHaveLength(1);
    expect(errors[0]).toContain(`Payload received on channel "${json}" is not valid JSON`);
    expect(errors[0]).toContain('(skipped for Receiver.receiveJson)');
  });
});

async function waitForPayload(inbox: Inbox<string>, payload: string): Promise<void> {
  while (!inbox.items.includes(payload)) await inbox.until(inbox.items.length + 1);
}
