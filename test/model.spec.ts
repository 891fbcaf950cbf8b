import { writeFileSync } from 'node:fs';
import fc from 'fast-check';
import pg from 'pg';
import { databaseUrl } from './support/database.js';
import { commandSequences, decoratedProviders } from './support/model/commands.js';
import { Harness } from './support/model/harness.js';

/**
 * A stateful property test (fast-check `commands` / `asyncModelRun`) against the real server,
 * the LISTEN connection going through the fault-injecting proxy. Every run builds an application
 * with a random set of decorated providers (with and without @OnOutOfSync), then runs a random
 * sequence of commands: listen() (with and without onOutOfSync), off(), unlisten(), notify,
 * notifyMany, transactional notify (committed, rolled back), resync(), a killed backend, a reset,
 * a blackhole, refused connections, a slow handler, an overflow burst while it hangs; every third
 * payload is too large for pg_notify and goes through the `largePayloads` table. After every
 * command it waits until everything sent was handled, then checks the invariants that the README's
 * "Guarantees" imply (test/support/model/harness.ts, "invariants"); at the end it closes the app
 * and checks that no timer and no socket is left.
 *
 * - PGLN_FUZZ_RUNS (default 50) and PGLN_FUZZ_COMMANDS (most commands per run, default 50): more runs, longer runs.
 * - PGLN_FUZZ_SEED, PGLN_FUZZ_PATH and PGLN_FUZZ_REPLAY_PATH replay a counterexample: fast-check prints the
 *   seed and path, and the commands' `replayPath="..."` after the shrunk command list.
 * - PGLN_FUZZ_VERBOSE=1 prints what every run did; PGLN_FUZZ_FC_VERBOSE=2 every failing value met while shrinking;
 *   PGLN_FUZZ_TRACE=<file> writes the last run's timeline there (`%d` in it: every run's, numbered).
 */
const RUNS = Number(process.env.PGLN_FUZZ_RUNS ?? 50);
const SEED = process.env.PGLN_FUZZ_SEED ? Number(process.env.PGLN_FUZZ_SEED) : 1_105_411;
const PATH = process.env.PGLN_FUZZ_PATH || undefined;
const MAX_COMMANDS = Number(process.env.PGLN_FUZZ_COMMANDS ?? 50);
const REPLAY_PATH = process.env.PGLN_FUZZ_REPLAY_PATH || undefined;

// idleTimeoutMillis 0: an idle admin connection keeps no timer, so none is mistaken for one the module left.
const admin = new pg.Pool({ connectionString: databaseUrl(), application_name: 'pgln-model-admin', max: 4, idleTimeoutMillis: 0 });
afterAll(() => admin.end());

let runs = 0;

describe('model: random subscribers, notifications, resyncs and faults', () => {
  it(`keeps every guarantee (${RUNS} runs, seed ${SEED})`, async () => {
    await fc.assert(
      fc.asyncProperty(decoratedProviders, commandSequences(MAX_COMMANDS, REPLAY_PATH), async (decorated, commands) => {
        const h = Harness.create(admin, decorated);
        try {
          await h.start();
          await fc.asyncModelRun(() => ({ model: h, real: h }), commands);
          await h.finish();
          if (process.env.PGLN_FUZZ_VERBOSE) console.log(`run ok:\n  ${h.journal.join('\n  ')}\n  (${h.sent.size} notifications, ${h.tick} events)`);
        } finally {
          if (process.env.PGLN_FUZZ_TRACE) writeFileSync(process.env.PGLN_FUZZ_TRACE.replace('%d', String(++runs)), h.trace.join('\n'));
          await h.dispose();
        }
      }),
      { seed: SEED, numRuns: RUNS, path: PATH, verbose: Number(process.env.PGLN_FUZZ_FC_VERBOSE ?? 1) },
    );
  }, 60 * 60_000);
});
