import { Injectable } from '@nestjs/common';
import {
  OnNotification,
  PglnChannelError,
  PglnOptionsError,
  PglnPayloadError,
  type PglnNotification,
} from '../lib/index.js';
import { resolveOptions } from '../lib/pgln.options.js';
import { assertChannel, encodePayload } from '../lib/pgln.validation.js';
import { createTestApp, type TestApp } from './support/app.js';
import { databaseUrl, unique } from './support/database.js';
import { Inbox } from './support/wait.js';

describe('channel names', () => {
  it.each([
    ['a plain name', 'orders'],
    ['mixed case', 'OrderEvents'],
    ['spaces and quotes', 'order "events" here'],
    ['63 ASCII bytes', 'x'.repeat(63)],
    ['21 three-byte characters (63 bytes)', '€'.repeat(21)],
    ['would-be SQL', '"; DROP TABLE x; --'],
  ])('accepts %s', (_, channel) => {
    expect(() => assertChannel(channel)).not.toThrow();
  });

  it.each([
    ['an empty name', '', /must not be empty/],
    ['64 ASCII bytes', 'x'.repeat(64), /is 64 bytes in UTF-8; PostgreSQL keeps at most 63 bytes/],
    ['22 three-byte characters (66 bytes)', '€'.repeat(22), /is 66 bytes in UTF-8; PostgreSQL keeps at most 63 bytes/],
    ['a NUL', 'a\0b', /contains a NUL character/],
    ['a number', 42, /must be a string, got number/],
    ['null', null, /must be a string, got null/],
  ])('rejects %s with a message naming the limit', (_, channel, message) => {
    expect(() => assertChannel(channel)).toThrow(PglnChannelError);
    expect(() => assertChannel(channel)).toThrow(message);
  });

  it('rejects a bad name in a decorator when the class is defined', () => {
    expect(() => {
      class Bad {
        @OnNotification('y'.repeat(64))
        handle() {}
      }
      return Bad;
    }).toThrow(/64 bytes in UTF-8; PostgreSQL keeps at most 63 bytes/);
  });
});

describe('payloads', () => {
  it.each([
    ['7999 ASCII bytes', 'a'.repeat(7999)],
    ['7999 bytes ending in a 2-byte character', 'a'.repeat(7997) + 'é'],
    ['the empty string', ''],
  ])('accepts %s unchanged', (_, payload) => {
    expect(encodePayload('c', payload)).toBe(payload);
  });

  it('sends undefined as the empty payload and other values as JSON', () => {
    expect(encodePayload('c', undefined)).toBe('');
    expect(encodePayload('c', { id: 1, name: 'ä' })).toBe('{"id":1,"name":"ä"}');
    expect(encodePayload('c', [1, 2])).toBe('[1,2]');
    expect(encodePayload('c', null as unknown as object)).toBe('null');
  });

  it.each([
    ['8000 ASCII bytes', 'a'.repeat(8000), /is 8000 bytes in UTF-8; pg_notify accepts at most 7999 bytes/],
    ['8000 bytes from a 2-byte character at the boundary', 'a'.repeat(7998) + 'é', /is 8000 bytes/],
    ['4000 two-byte characters', 'é'.repeat(4000), /is 8000 bytes/],
    ['an object encoding to 8000+ bytes', { text: 'a'.repeat(8000) }, /is 8011 bytes/],
    ['a NUL', 'a\0b', /contains a NUL character/],
  ])('rejects %s', (_, payload, message) => {
    expect(() => encodePayload('c', payload)).toThrow(PglnPayloadError);
    expect(() => encodePayload('c', payload)).toThrow(message);
  });

  it('rejects a circular object, naming the channel and the cause', () => {
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    expect(() => encodePayload('orders', circular)).toThrow(
      /Payload for channel "orders" cannot be encoded as JSON: .*circular/i,
    );
  });
});

describe('options', () => {
  it('lists every problem at once', () => {
    let error: unknown;
    try {
      resolveOptions({
        connectionString: databaseUrl(),
        pool: { max: 2 },
        reconnect: { initialDelayMs: -1, maxDelayMs: 0 },
        shutdownTimeoutMs: Number.NaN,
        applicationName: '',
      });
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(PglnOptionsError);
    const message = (error as Error).message;
    expect(message).toMatch(/either connectionString, or pool/);
    expect(message).toMatch(/reconnect.initialDelayMs must be a number > 0 \(ms\), got -1/);
    expect(message).toMatch(/reconnect.maxDelayMs must be a number > 0 \(ms\), got 0/);
    expect(message).toMatch(/shutdownTimeoutMs must be a number >= 0 \(ms\), got NaN/);
    expect(message).toMatch(/applicationName must be a non-empty string/);
  });

  it('asks for connection settings when none are given', () => {
    expect(() => resolveOptions({})).toThrow(/no connection settings: give connectionString, or pool/);
  });

  it('rejects a maximum delay below the initial one', () => {
    expect(() => resolveOptions({ connectionString: databaseUrl(), reconnect: { initialDelayMs: 500, maxDelayMs: 100 } })).toThrow(
      /reconnect.maxDelayMs \(100\) must be at least reconnect.initialDelayMs \(500\)/,
    );
  });

  it('fails application start with the options error', async () => {
    await expect(createTestApp({}, { reconnect: { initialDelayMs: 0 } })).rejects.toThrow(
      /Invalid PglnModule options:\n {2}- reconnect.initialDelayMs must be a number > 0/,
    );
  });
});

describe('notify with bad input, against PostgreSQL', () => {
  const channel = unique('valid');
  const inbox = new Inbox<string>();

  @Injectable()
  class Receiver {
    @OnNotification(channel)
    receive(payload: string, notification: PglnNotification) {
      inbox.push(payload);
      expect(notification.channel).toBe(channel);
    }
  }

  let t: TestApp;
  beforeAll(async () => {
    t = await createTestApp({ providers: [Receiver] });
  });
  afterAll(() => t.app.close());

  it('rejects before sending and keeps delivering afterwards', async () => {
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    await expect(t.pgln.notify('', 'x')).rejects.toThrow(PglnChannelError);
    await expect(t.pgln.notify('z'.repeat(64), 'x')).rejects.toThrow(/64 bytes/);
    await expect(t.pgln.notify(channel, 'a'.repeat(8000))).rejects.toThrow(/8000 bytes.*at most 7999/);
    await expect(t.pgln.notify(channel, circular)).rejects.toThrow(PglnPayloadError);

    const largest = 'é'.repeat(3999) + 'a';
    await t.pgln.notify(channel, largest);
    await t.pgln.notify(channel, { after: 'errors' });
    expect(await inbox.until(2)).toEqual([largest, '{"after":"errors"}']);
  });
});
