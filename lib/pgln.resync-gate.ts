import { createHash, randomInt } from 'node:crypto';
import type { Logger } from '@nestjs/common';
import type { Pool, PoolClient } from 'pg';
import type { OutOfSyncReason } from './interfaces/index.js';
import { destroyConnection } from './pgln.connection.js';
import { describeError } from './pgln.connection-errors.js';
import { RESYNC_SLOT_GIVEN_UP, RESYNC_SLOT_WAITING } from './pgln.messages.js';
import type { ResolvedPglnOptions } from './pgln.options.js';
import type { PglnTransport } from './pgln.transport.js';

const noop = () => undefined;

/** Waits `ms`, or less if `signal` aborts (then rejects). A global timer, as the backoff's. */
function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const abort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', abort);
      resolve();
    }, ms);
    signal.addEventListener('abort', abort, { once: true });
  });
}

/** How often a run without a slot asks again, at most (each wait is random up to this). */
const SLOT_POLL_MS = 200;

/**
 * At most `concurrency` out-of-sync runs at once across every instance that shares the key (the
 * same database, `applicationName` and instance name): N PostgreSQL advisory locks, one per slot,
 * each held on a pooled connection while its run's handlers run. A slot is given up when its
 * connection is lost (PostgreSQL releases the lock) or after `holdMs`, whatever the handler does,
 * so that one that hangs cannot stall the fleet for good.
 */
export class ResyncSlots {
  /** The advisory lock's first key, from the name: every instance of the fleet computes the same. */
  private readonly key: number;
  /** Runs waiting for a slot now (for stats). */
  waiting = 0;
  private warned = false;

  constructor(
    private readonly pool: Pool,
    name: string,
    private readonly concurrency: number,
    private readonly holdMs: number,
    private readonly logger: Logger,
  ) {
    this.key = createHash('sha256').update(`pgln-resync:${name}`).digest().readInt32BE(0);
  }

  /** Waits for a slot (rejects if `signal` aborts first); resolves with its release. */
  async acquire(signal: AbortSignal): Promise<() => void> {
    this.waiting++;
    try {
      for (;;) {
        const held = await this.tryAll().catch(() => undefined);
        if (held) return held;
        if (!this.warned) this.logger.log(RESYNC_SLOT_WAITING(this.concurrency));
        this.warned = true;
        await pause(1 + randomInt(SLOT_POLL_MS), signal);
      }
    } finally {
      this.waiting--;
    }
  }

  /** Takes a free slot, trying them from a random one; undefined if every one is taken. */
  private async tryAll(): Promise<(() => void) | undefined> {
    const client = await this.pool.connect();
    let broken = false;
    const onError = () => (broken = true);
    client.on('error', onError);
    let kept = false;
    try {
      const first = randomInt(this.concurrency);
      for (let i = 0; i < this.concurrency; i++) {
        const slot = (first + i) % this.concurrency;
        const { rows } = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1, $2) AS ok', [this.key, slot]);
        if (rows[0]!.ok) {
          kept = true;
          return this.hold(client, slot, onError);
        }
      }
      return undefined;
    } catch (error) {
      broken = true;
      throw error;
    } finally {
      if (!kept) {
        client.removeListener('error', onError);
        // A connection that failed is destroyed rather than reused.
        client.release(broken);
      }
    }
  }

  /** Keeps the slot's connection until released, or until `holdMs` passed. */
  private hold(client: PoolClient, slot: number, onError: () => void): () => void {
    let released = false;
    const release = (reason?: string) => {
      if (released) return;
      released = true;
      clearTimeout(timer);
      if (reason) this.logger.warn(reason);
      client
        .query('SELECT pg_advisory_unlock($1, $2)', [this.key, slot])
        .then(
          () => client.release(),
          (error: unknown) => {
            // The lock goes with the connection.
            this.logger.warn(`Could not release resync slot ${slot}: ${describeError(error)}`);
            client.release(error as Error);
            destroyConnection(client);
          },
        )
        .finally(() => client.removeListener('error', onError))
        .catch(noop);
    };
    const timer = setTimeout(() => release(RESYNC_SLOT_GIVEN_UP(slot, this.holdMs)), this.holdMs);
    return () => release();
  }
}

/**
 * What an out-of-sync run waits for before its handlers: after a reconnect, a random delay of up
 * to `jitterMs` (instances that lost the server together do not all reload in the same instant);
 * then, with `slots`, one of the fleet's slots.
 */
export class ResyncGate {
  /**
   * The gate the `resync` options ask for, or none: slots from the transport (keyed by
   * `applicationName` and instance `name`: the fleet shares them), and the jitter.
   */
  static of(options: ResolvedPglnOptions, name: string, transport: PglnTransport, logger: Logger): ResyncGate | undefined {
    const { concurrency, jitterMs, holdMs } = options.resync;
    const slots = concurrency === undefined ? undefined : transport.resyncSlots?.(`${options.applicationName}:${name}`, concurrency, holdMs, logger);
    return slots || jitterMs > 0 ? new ResyncGate(jitterMs, slots) : undefined;
  }

  constructor(
    private readonly jitterMs: number,
    private readonly slots?: ResyncSlots,
  ) {}

  /** Runs waiting for a slot now. */
  get waiting(): number {
    return this.slots?.waiting ?? 0;
  }

  /** Resolves with what to call when the run's handlers are done; rejects if `signal` aborts first. */
  async enter(reason: OutOfSyncReason, signal: AbortSignal): Promise<() => void> {
    if (reason === 'reconnect' && this.jitterMs > 0) await pause(randomInt(this.jitterMs + 1), signal);
    return this.slots ? this.slots.acquire(signal) : noop;
  }
}
