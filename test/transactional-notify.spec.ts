import pg from 'pg';
import { PglnChannelError, PglnError, PglnPayloadError, defineChannel, type PglnExecutor } from '../lib/index.js';
import { createTestApp, type TestApp } from './support/app.js';
import { adminPool, databaseUrl, unique } from './support/database.js';
import { TransactionProbe } from './support/transactions.js';

/**
 * notify inside the caller's transaction, with node-postgres itself (test/orm covers the ORMs):
 * delivered at commit and after the row is visible, never on rollback.
 */

const admin = adminPool();
const pool = new pg.Pool({ connectionString: databaseUrl(), max: 2 });
afterAll(async () => {
  await pool.end();
  await admin.end();
});

let t: TestApp;
let probe: TransactionProbe;
beforeEach(async () => {
  t = await createTestApp();
  probe = new TransactionProbe(admin);
  await probe.start(t);
});
afterEach(async () => {
  await probe.stop();
  await t.app.close();
});

/** Runs `work` in a transaction on a client of the test pool, committing unless it throws. */
async function transaction(work: (client: pg.PoolClient) => Promise<void>): Promise<void> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    await work(client);
    await client.query('COMMIT');
  } catch (error) {
    await client.query('ROLLBACK');
    throw error;
  } finally {
    client.release();
  }
}

const EXECUTORS: [string, (client: pg.PoolClient) => PglnExecutor][] = [
  ['the client itself (an object with query)', (client) => client],
  ['a function (text, values)', (client) => (text, values) => client.query(text, values)],
];

describe.each(EXECUTORS)('notify with { executor }: %s', (_, executorOf) => {
  it('a committed write is delivered once, after its row is visible', async () => {
    await transaction(async (client) => {
      await client.query(probe.insertSql, ['a', 'first']);
      await t.pgln.notify(probe.channel, 'a', { executor: executorOf(client) });
    });
    expect(await probe.settle(t)).toEqual(['a:visible']);
  });

  it('a rolled-back write is never delivered', async () => {
    await expect(
      transaction(async (client) => {
        await client.query(probe.insertSql, ['b', 'second']);
        await t.pgln.notify(probe.channel, 'b', { executor: executorOf(client) });
        throw new Error('changed my mind');
      }),
    ).rejects.toThrow('changed my mind');
    expect(await probe.settle(t)).toEqual([]);
  });

  it('a notification in a transaction that fails later is never delivered', async () => {
    await expect(
      transaction(async (client) => {
        await t.pgln.notify(probe.channel, 'c', { executor: executorOf(client) });
        await client.query(probe.insertSql, ['c', null]); // NOT NULL violation
      }),
    ).rejects.toThrow(/null value in column "name"/);
    expect(await probe.settle(t)).toEqual([]);
  });

  it('notifyMany sends them all at commit, in order', async () => {
    await transaction(async (client) => {
      await client.query(probe.insertSql, ['d', 'fourth']);
      await client.query(probe.insertSql, ['e', 'fifth']);
      await t.pgln.notifyMany(
        [
          { channel: probe.channel, payload: 'd' },
          { channel: probe.channel, payload: 'e' },
        ],
        { executor: executorOf(client) },
      );
    });
    expect(await probe.settle(t)).toEqual(['d:visible', 'e:visible']);
  });
});

describe('notifyQuery and notifyManyQuery', () => {
  it('build validated statements that run on any connection', async () => {
    const query = t.pgln.notifyQuery(probe.channel, 'f');
    expect(query).toEqual({ text: 'SELECT pg_notify($1, $2)', values: [probe.channel, 'f'] });
    const many = t.pgln.notifyManyQuery([
      { channel: probe.channel, payload: 'g' },
      { channel: probe.channel, payload: { id: 'h' } },
    ]);
    expect(many.values).toEqual([
      [probe.channel, probe.channel],
      ['g', '{"id":"h"}'],
    ]);
    await transaction(async (client) => {
      await client.query(probe.insertSql, ['f', 'sixth']);
      await client.query(probe.insertSql, ['g', 'seventh']);
      await client.query(query.text, query.values);
      await client.query(many.text, many.values);
    });
    expect(await probe.settle(t)).toEqual(['f:visible', 'g:visible', '{"id":"h"}:missing']);
  });

  it('reject what notify rejects, before anything is built', () => {
    expect(() => t.pgln.notifyQuery('x'.repeat(64), 'p')).toThrow(PglnChannelError);
    expect(() => t.pgln.notifyQuery(probe.channel, 'a'.repeat(8000))).toThrow(PglnPayloadError);
    expect(() => t.pgln.notifyManyQuery([{ channel: probe.channel, payload: 'fine' }, { channel: 'bad\0', payload: 'p' }])).toThrow(
      /contains a NUL character/,
    );
  });
});

describe('with a bad argument nothing reaches the executor', () => {
  it.each([
    ['a bad channel name', () => t.pgln.notify('', 'p', { executor: spy }), PglnChannelError],
    ['a payload that is too large', () => t.pgln.notify(probe.channel, 'a'.repeat(8000), { executor: spy }), PglnPayloadError],
    ['a payload failing the channel’s schema', () => t.pgln.notify(strictChannel, 'not a number' as never, { executor: spy }), PglnPayloadError],
    ['a bad item in notifyMany', () => t.pgln.notifyMany([{ channel: probe.channel, payload: 'ok' }, { channel: 'x'.repeat(64) }], { executor: spy }), PglnChannelError],
  ])('%s', async (_, send, type) => {
    await expect(send()).rejects.toBeInstanceOf(type);
    expect(calls).toEqual([]);
  });

  it('an executor that is neither a function nor has query()', async () => {
    await expect(t.pgln.notify(probe.channel, 'p', { executor: { execute: () => undefined } as never })).rejects.toThrow(
      new PglnError(
        'executor must be an object with query(text, values), such as a pg client or a TypeORM EntityManager, or a function (text, values) => Promise, got object.',
      ),
    );
  });

  const calls: unknown[] = [];
  const spy: PglnExecutor = async (text, values) => void calls.push([text, values]);
  const strictChannel = defineChannel(unique('strict'), {
    schema: {
      '~standard': {
        version: 1,
        vendor: 'test',
        validate: (value: unknown) => (typeof value === 'number' ? { value } : { issues: [{ message: 'expected a number' }] }),
      },
    },
  });
});
