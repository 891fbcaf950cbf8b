import pg from 'pg';
import {
  PglnOptionsError,
  PglnPayloadError,
  PglnPayloadLostError,
  PglnService,
  defineChannel,
  type OutOfSyncEvent,
  type PglnExecutor,
  type PglnModuleOptions,
} from '../lib/index.js';
import { Injectable, Logger, type OnModuleInit } from '@nestjs/common';
import { createHash } from 'node:crypto';
import { PayloadStore } from '../lib/pgln.payload-store.js';
import { createTestApp, initFailure, buildTestApp, type TestApp } from './support/app.js';
import { adminPool, databaseUrl, unique } from './support/database.js';
import { Inbox, waitFor } from './support/wait.js';

/**
 * `largePayloads`: payloads over pg_notify's 7,999 bytes go through a table, in the sender's
 * transaction, and arrive whole and in order; a reference whose row is gone is reported and read
 * over, never lost in silence.
 */

const admin = adminPool();
const pool = new pg.Pool({ connectionString: databaseUrl(), max: 2 });
/** Every test file's own table: the cleanup test must not delete another file's rows. */
const table = unique('payloads').toLowerCase();
afterAll(async () => {
  await admin.query(`DROP TABLE IF EXISTS ${table}`);
  await pool.end();
  await admin.end();
});

const KB = 1024;
const MB = 1024 * KB;
/** A payload of exactly `bytes` bytes in UTF-8 whose content says which it is. */
const payloadOf = (bytes: number, tag: string) => `${tag}:`.padEnd(bytes, 'x');

let t: TestApp | undefined;
/** The app of the running test. */
const app = (): TestApp => t!;
let channel: string;
let inbox: Inbox<string>;
const errors: unknown[] = [];
const resyncs: OutOfSyncEvent[] = [];
/** A raw pg.Client on the channel: what any other listener sees on the wire. */
let raw: pg.Client | undefined;
let rawInbox: Inbox<string>;

async function start(options: Partial<PglnModuleOptions> = {}): Promise<void> {
  t = await createTestApp({}, { largePayloads: { table }, ...options });
  channel = unique('large');
  inbox = new Inbox<string>();
  errors.length = 0;
  resyncs.length = 0;
  await app().pgln.listen(channel, {
    onNotification: (payload: string) => inbox.push(payload),
    onOutOfSync: (event) => void resyncs.push(event),
    onError: (error) => void errors.push(error),
  });
  raw = new pg.Client({ connectionString: databaseUrl() });
  await raw.connect();
  rawInbox = new Inbox<string>();
  raw.on('notification', (message) => rawInbox.push(message.payload ?? ''));
  await raw.query(`LISTEN "${channel}"`);
}

afterEach(async () => {
  await raw?.end();
  await t?.app.close();
  raw = undefined;
  t = undefined;
});

/** Runs `work` in a transaction on a pooled client; rolls back if it throws or `rollback` is set. */
async function transaction(work: (client: pg.PoolClient) => Promise<void>, rollback = false): Promise<void> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    await work(client);
    await client.query(rollback ? 'ROLLBACK' : 'COMMIT');
  } catch (error) {
    await client.query('ROLLBACK');
    throw error;
  } finally {
    client.release();
  }
}

const rows = async () => Number((await admin.query(`SELECT count(*) AS n FROM ${table}`)).rows[0].n);

describe('largePayloads', () => {
  beforeEach(() => start());

  it('sends 7,999 bytes on the wire as they are and 8,000 bytes as a reference; both arrive whole', async () => {
    const small = payloadOf(7_999, 'small');
    const large = payloadOf(8_000, 'large');
    await app().pgln.notify(channel, small);
    await app().pgln.notify(channel, large);
    expect(await inbox.until(2)).toEqual([small, large]);
    const wire = await rawInbox.until(2);
    expect(wire[0]).toBe(small);
    expect(wire[1]).toMatch(/^pgln-payload:\d+$/);
  });

  it.each([
    ['1 MB', MB],
    ['10 MB', 10 * MB],
  ])('%s through notify, notifyMany and each executor form, in order', async (_, bytes) => {
    const sent: string[] = [];
    const next = (tag: string) => {
      sent.push(payloadOf(bytes, tag));
      return sent[sent.length - 1]!;
    };
    await app().pgln.notify(channel, next('notify'));
    await app().pgln.notifyMany([
      { channel, payload: 'small before' },
      { channel, payload: next('many') },
      { channel, payload: 'small after' },
    ]);
    sent.splice(sent.length - 1, 0, 'small before');
    sent.push('small after');
    const executors: [string, (client: pg.PoolClient) => PglnExecutor][] = [
      ['object', (client) => client],
      ['function', (client) => (text, values) => client.query(text, values)],
    ];
    for (const [name, executorOf] of executors) {
      await transaction((client) => app().pgln.notify(channel, next(`executor-${name}`), { executor: executorOf(client) }));
      await transaction((client) => app().pgln.notifyMany([{ channel, payload: next(`executor-many-${name}`) }], { executor: executorOf(client) }));
    }
    await transaction(async (client) => {
      const query = app().pgln.notifyQuery(channel, next('notifyQuery'));
      await client.query(query.text, query.values);
      const many = app().pgln.notifyManyQuery([{ channel, payload: next('notifyManyQuery') }]);
      await client.query(many.text, many.values);
    });
    const received = await inbox.until(sent.length, 30_000);
    // Compared by tag and length: a failure must not print ten megabytes.
    const summary = (payloads: string[]) => payloads.map((payload) => `${payload.slice(0, payload.indexOf(':') + 1)}${payload.length}`);
    expect(summary(received)).toEqual(summary(sent));
    expect(received).toEqual(sent);
    for (const payload of await rawInbox.until(sent.length)) {
      if (payload.length > 100) throw new Error(`a raw listener got ${payload.length} characters`);
    }
  });

  it('a rolled-back transaction leaves no row and delivers nothing', async () => {
    const before = await rows();
    await transaction(async (client) => {
      await app().pgln.notify(channel, payloadOf(MB, 'rolled back'), { executor: client });
      await app().pgln.notifyMany([{ channel, payload: payloadOf(MB, 'rolled back too') }], { executor: client });
    }, true);
    await app().pgln.notify(channel, 'after');
    expect(await inbox.until(1)).toEqual(['after']);
    expect(await rows()).toBe(before);
  });

  it('keeps order when small notifications arrive while large ones are fetched', async () => {
    const sent = Array.from({ length: 40 }, (_, i) => (i % 3 === 0 ? payloadOf(20 * KB, `large-${i}`) : `small-${i}`));
    await Promise.all(sent.map((payload) => app().pgln.notify(channel, payload)));
    // Sent concurrently: the order of commits is the order on the wire, which the raw listener sees.
    const wire = await rawInbox.until(sent.length);
    const received = await inbox.until(sent.length);
    // Each reference resolved to a large payload at its place; the others as they were on the wire.
    const inPlace = received.map((payload, i) => (wire[i]!.startsWith('pgln-payload:') ? payload.length === 20 * KB : payload === wire[i]));
    expect(inPlace).toEqual(received.map(() => true));
    expect([...received].sort()).toEqual([...sent].sort());
  });

  it('a reference whose row is gone is reported as PglnPayloadLostError and the channel reads again', async () => {
    await transaction(async (client) => {
      await app().pgln.notify(channel, payloadOf(9_000, 'gone'), { executor: client });
      await app().pgln.notify(channel, payloadOf(9_000, 'gone too'), { executor: client });
      await client.query(`DELETE FROM ${table} WHERE channel = $1`, [channel]);
    });
    await waitFor('the resync', () => resyncs.some((event) => event.reason === 'overflow'));
    // Two in a row: one report.
    expect(errors).toHaveLength(1);
    expect(errors[0]).toBeInstanceOf(PglnPayloadLostError);
    expect(errors[0]).toMatchObject({ channel, lost: 2 });
    expect((errors[0] as Error).message).toMatch(/could not be fetched: row \d+ of payloads_\S+ is gone/);
    expect(app().logs.messages('error').join('\n')).toMatch(/the large payloads of 2 notifications in a row \(reference \d+ first\) could not be fetched/);
    expect(app().pgln.stats().channels[channel]!.dropped).toBe(2);
    // Delivery goes on.
    await app().pgln.notify(channel, payloadOf(9_000, 'next'));
    expect((await inbox.until(1))[0]).toBe(payloadOf(9_000, 'next'));
  });
});

describe('largePayloads: references sent by hand', () => {
  beforeEach(() => start());

  it("a reference to another channel's row is reported, not delivered", async () => {
    const other = unique('other');
    await app().pgln.notify(other, payloadOf(9_000, 'secret'));
    const id = (await admin.query(`SELECT max(id)::text AS id FROM ${table} WHERE channel = $1`, [other])).rows[0].id;
    await admin.query('SELECT pg_notify($1, $2)', [channel, `pgln-payload:${id}`]);
    await waitFor('the resync', () => resyncs.some((event) => event.reason === 'overflow'));
    expect(inbox.items).toEqual([]);
    expect((errors[0] as Error).message).toMatch(/is a payload of channel "other_\S+", not this one's/);
  });

  it('a reference that cannot be a row id is delivered as the text it is', async () => {
    const texts = ['pgln-payload:9223372036854775808', 'pgln-payload:007', 'pgln-payload:-1'];
    for (const text of texts) await admin.query('SELECT pg_notify($1, $2)', [channel, text]);
    expect(await inbox.until(3)).toEqual(texts);
    expect(errors).toEqual([]);
  });
});

describe('largePayloads: a fetch that waits', () => {
  it('holds the notifications behind it up to maxQueuedNotifications, then drops them and reads again', async () => {
    // The module's pool has one connection, which the test holds: the fetch waits for it.
    const own = new pg.Pool({ connectionString: databaseUrl(), max: 1 });
    try {
      await start({ pool: own, maxQueuedNotifications: 5 });
      const held = await own.connect();
      const sender = await admin.connect();
      try {
        await app().pgln.notify(channel, payloadOf(9_000, 'first'), { executor: sender });
        // The sixth one held is one too many.
        for (let i = 0; i < 5; i++) await app().pgln.notify(channel, `small-${i}`, { executor: sender });
        await waitFor('the overflow', () => app().logs.messages('warn').some((line) => /were held behind the fetch of a large payload, more than maxQueuedNotifications \(5\); dropped them/.test(line)));
        expect(app().pgln.stats().channels[channel]!.queued).toBe(0);
      } finally {
        held.release();
        sender.release();
      }
      await waitFor('the resync', () => resyncs.some((event) => event.reason === 'overflow'));
      await app().pgln.notify(channel, 'after');
      await waitFor('delivery again', () => inbox.items.includes('after'));
      expect(inbox.items).toEqual(['after']);
      // A subscriber with an out-of-sync handler is not told of an overflow its read covers.
      expect(errors).toEqual([]);
    } finally {
      await app().app.close();
      t = undefined;
      await own.end();
    }
  });
});

describe('largePayloads: setup and cleanup', () => {
  it('an exactly-once channel sends a large payload with its sending transaction id', async () => {
    await start();
    const defined = defineChannel<{ blob: string }>(unique('once'), { exactlyOnce: true });
    const got = new Inbox<{ blob: string }>();
    await app().pgln.listen(defined, { onNotification: (payload) => got.push(payload) });
    await app().pgln.notify(defined, { blob: 'y'.repeat(20 * KB) });
    expect((await got.until(1))[0]!.blob).toHaveLength(20 * KB);
    expect(app().pgln.stats().channels[defined.name]!.withoutTransactionId).toBe(0);
  });

  it('a payload shaped like a reference goes through the table, so it arrives as it was sent', async () => {
    await start();
    await app().pgln.notify(channel, 'pgln-payload:1');
    expect(await inbox.until(1)).toEqual(['pgln-payload:1']);
    expect((await rawInbox.until(1))[0]).not.toBe('pgln-payload:1');
  });

  it('creates a missing table, and deletes rows older than retentionMs', async () => {
    const own = unique('cleanup').toLowerCase();
    try {
      const app = await createTestApp({}, { largePayloads: { table: own, retentionMs: 1_000 } });
      try {
        await app.pgln.notify(unique('c'), payloadOf(9_000, 'expires'));
        await waitFor('the expired row deleted', async () => Number((await admin.query(`SELECT count(*) AS n FROM ${own}`)).rows[0].n) === 0);
      } finally {
        await app.app.close();
      }
    } finally {
      await admin.query(`DROP TABLE IF EXISTS ${own}`);
    }
  });

  it('has the table ready for a module that sends a large payload from its own onModuleInit', async () => {
    const own = unique('early').toLowerCase();
    const early = unique('early');
    @Injectable()
    class WarmUp implements OnModuleInit {
      constructor(private readonly pgln: PglnService) {}
      async onModuleInit(): Promise<void> {
        await this.pgln.notify(early, payloadOf(9_000, 'early'));
      }
    }
    try {
      const app = await createTestApp({ providers: [WarmUp] }, { largePayloads: { table: own } });
      await app.app.close();
      expect(Number((await admin.query(`SELECT count(*) AS n FROM ${own} WHERE channel = $1`, [early])).rows[0].n)).toBe(1);
    } finally {
      await admin.query(`DROP TABLE IF EXISTS ${own}`);
    }
  });

  it('deletes on one instance at a time: a cleanup round skips while another holds the lock', async () => {
    await start();
    await app().pgln.notify(channel, payloadOf(9_000, 'kept'));
    await inbox.until(1);
    const store = new PayloadStore((text, values) => admin.query(text, values), table, 1_000, 5_000, new Logger('test'));
    await admin.query(`UPDATE ${table} SET created_at = created_at - interval '1 hour'`);
    const key = createHash('sha256').update(`pgln-payloads:${table}`).digest().readBigInt64BE(0);
    const holder = await admin.connect();
    try {
      await holder.query('SELECT pg_advisory_lock($1::bigint)', [key.toString()]);
      await store.deleteExpired();
      expect(await rows()).toBeGreaterThan(0);
      await holder.query('SELECT pg_advisory_unlock($1::bigint)', [key.toString()]);
      await store.deleteExpired();
      expect(await rows()).toBe(0);
    } finally {
      holder.release();
    }
  });

  it('refuses a table name that is not a plain lower-case SQL name', async () => {
    await expect(buildTestApp({}, { largePayloads: { table: 'Payloads; DROP TABLE x' } })).rejects.toThrow(PglnOptionsError);
    await expect(buildTestApp({}, { largePayloads: { table: 'Payloads; DROP TABLE x' } })).rejects.toThrow(/largePayloads\.table must be a lower-case SQL name/);
  });

  it('fails bootstrap with the DDL when the table is missing and cannot be created', async () => {
    const role = unique('nocreate').toLowerCase();
    await admin.query(`CREATE ROLE ${role} LOGIN PASSWORD 'secret'`);
    try {
      const url = new URL(databaseUrl());
      url.username = role;
      url.password = 'secret';
      const failure = await initFailure(await buildTestApp({}, { connectionString: url.toString(), largePayloads: { table: `public.${unique('denied').toLowerCase()}` } }));
      expect(String(failure)).toMatch(/does not exist and could not be created \(.*permission denied.*\)\. Create it yourself/s);
      expect(String(failure)).toMatch(/CREATE TABLE IF NOT EXISTS "public"\."denied_\S+" \(/);
    } finally {
      await admin.query(`DROP ROLE ${role}`);
    }
  });

  it('without largePayloads, 8,000 bytes are refused with a message that names the option', async () => {
    t = await createTestApp();
    await expect(app().pgln.notify(unique('c'), 'a'.repeat(8_000))).rejects.toThrow(PglnPayloadError);
    await expect(app().pgln.notify(unique('c'), 'a'.repeat(8_000))).rejects.toThrow(/set largePayloads: \{\} in the module options/);
  });
});

describe('README', () => {
  it('gives the DDL the module runs', async () => {
    const { readFile } = await import('node:fs/promises');
    const { tableDdl } = await import('../lib/pgln.large-payloads.js');
    const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8');
    const section = readme.slice(readme.indexOf('### Payloads of any size'));
    const ddl = /```sql\n([\s\S]*?)\n```/.exec(section)?.[1];
    expect(ddl).toBe(tableDdl('public.pgln_payloads'));
  });
});
