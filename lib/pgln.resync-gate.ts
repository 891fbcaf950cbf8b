import { createHash, randomInt } from 'node:crypto';
import type { Logger } from '@nestjs/common';
import type { Client, QueryResultRow } from 'pg';
import { PglnError, PglnTimeoutError } from './errors/index.js';
import type { OutOfSyncReason } from './interfaces/index.js';
import { destroyConnection } from './pgln.connection.js';
import { Backoff } from './pgln.backoff.js';
import { describeError } from './pgln.connection-errors.js';
import {
  NO_ANSWER,
  RESYNC_SLOT_FAILED,
  RESYNC_SLOT_GIVEN_UP,
  RESYNC_SLOT_WAITING,
  RESYNC_SLOTS_LOST,
  RESYNC_SLOTS_UNREACHABLE,
} from './pgln.messages.js';
import { sleep, withTimeout } from './pgln.promises.js';
import type { ResolvedPglnOptions } from './pgln.options.js';
import type { PglnTransport } from './pgln.transport.js';

const noop = () => undefined;

/** How often the instance asks again while runs wait for a slot, at most (each wait is random up to this). */
const SLOT_POLL_MS = 200;
/** While asking keeps failing (no slot connection to be had): waits doubling from {@link SLOT_POLL_MS} up to 5 s. */
const failingPolls = new Backoff({ initialDelayMs: SLOT_POLL_MS, maxDelayMs: 5_000 });

/** A run waiting for a slot. */
interface Waiter {
  readonly resolve: (release: () => void) => void;
  readonly reject: (error: unknown) => void;
  /** Stops listening to the run's signal (once it has its slot, or was dropped). */
  readonly done: () => void;
}

/**
 * One slot given to one run, on one connection. A run releases only its own hold: the slot may
 * have been given up (`holdMs`, a lost connection) and given to another run since, whose hold
 * is another value.
 */
interface Hold {
  readonly slot: number;
  readonly timer: NodeJS.Timeout;
}

/**
 * At most `concurrency` out-of-sync runs at once across every instance that shares the key (the
 * same database, `applicationName` and instance name): N PostgreSQL advisory locks, one per slot.
 * Each instance holds its slots on one connection of its own, made with the LISTEN connection's
 * settings (a direct one: a transaction-mode pooler could take a lock on one backend and release it
 * on another), never a pooled one the application needs for `notify`. Its runs wait in order, and
 * one loop asks for free slots for all of them. Every query is bounded by `timeoutMs`: a connection
 * that does not answer is destroyed, which gives up its slots. A slot is given up after `holdMs`
 * whatever its handler does (and the server gives it up by itself: the connection's
 * `idle_session_timeout` is `holdMs`), so that one that hangs cannot stall the fleet. Asking
 * that keeps failing (no connection to be had: the server full, or unreachable while the LISTEN
 * connection holds on) is bounded too: once it has failed for `holdMs`, the runs waiting are told,
 * and run without a slot rather than never.
 */
export class ResyncSlots {
  /** The advisory lock's first key, from the name: every instance of the fleet computes the same. */
  private readonly key: number;
  private readonly waiters: Waiter[] = [];
  /** The slots this instance holds, by slot. */
  private readonly held = new Map<number, Hold>();
  private connection?: Promise<Client>;
  private polling = false;
  private closed = false;
  private warned = false;
  /** Since when (ms) asking for a slot has failed in a row, and how many times; undefined while it works. */
  private failing?: { since: number; times: number };

  constructor(
    /** Opens the slot connection (the LISTEN connection's settings and hosts). */
    private readonly connect: () => Promise<Client>,
    name: string,
    private readonly concurrency: number,
    private readonly holdMs: number,
    private readonly timeoutMs: number,
    private readonly logger: Logger,
  ) {
    this.key = createHash('sha256').update(`pgln-resync:${name}`).digest().readInt32BE(0);
  }

  /** Runs waiting for a slot now (for stats). */
  get waiting(): number {
    return this.waiters.length;
  }

  /** Waits for a slot, in order (rejects if `signal` aborts first, or at shutdown); resolves with its release. */
  acquire(signal: AbortSignal): Promise<() => void> {
    if (this.closed) return Promise.reject(new Error('closed'));
    if (signal.aborted) return Promise.reject(signal.reason);
    return new Promise((resolve, reject) => {
      const abort = () => this.drop(waiter, signal.reason);
      const waiter: Waiter = { resolve, reject, done: () => signal.removeEventListener('abort', abort) };
      this.waiters.push(waiter);
      signal.addEventListener('abort', abort, { once: true });
      void this.poll();
    });
  }

  /** Gives every slot up and rejects every waiter (shutdown). */
  close(): void {
    this.closed = true;
    for (const waiter of this.waiters.splice(0)) {
      waiter.done();
      waiter.reject(new Error('closed'));
    }
    this.disconnect();
  }

  /** One loop per instance: while runs wait, takes free slots and hands them over in order. */
  private async poll(): Promise<void> {
    if (this.polling) return;
    this.polling = true;
    try {
      while (this.waiters.length > 0 && !this.closed) {
        let slot: number | undefined;
        try {
          slot = await this.tryAny();
          this.failing = undefined;
        } catch (error) {
          this.failed(error);
        }
        if (slot !== undefined) {
          this.handOver(slot);
          continue;
        }
        if (!this.warned) this.logger.log(RESYNC_SLOT_WAITING(this.concurrency));
        this.warned = true;
        const waitMs = this.failing ? failingPolls.delay(this.failing.times + 1) : randomInt(SLOT_POLL_MS);
        // Unref'd: a shutdown does not wait for it (the loop ends once it sees `closed`).
        await new Promise((resolve) => setTimeout(resolve, 1 + waitMs).unref());
      }
    } finally {
      this.polling = false;
      // The next runs to wait get the whole grace of `holdMs` again, and a failure is logged again.
      this.failing = undefined;
    }
  }

  /**
   * A free slot, taken on this instance's connection, or undefined when every one is taken. One
   * round trip tries the slots it does not hold, from a random one on: the scan stops at the
   * first lock it gets (LIMIT pulls one row at a time), so it never takes two.
   */
  private async tryAny(): Promise<number | undefined> {
    const first = randomInt(this.concurrency);
    const slots: number[] = [];
    for (let i = 0; i < this.concurrency; i++) {
      const slot = (first + i) % this.concurrency;
      if (!this.held.has(slot)) slots.push(slot);
    }
    if (slots.length === 0) return undefined;
    const client = await this.client();
    const { rows } = await this.query<{ slot: number }>(
      client,
      'SELECT slot FROM unnest($2::int[]) AS slot WHERE pg_try_advisory_lock($1, slot) LIMIT 1',
      [this.key, slots],
    );
    return rows[0]?.slot;
  }

  /**
   * Asking for a slot failed: the connection is dropped (a new one is made for the next attempt),
   * the first failure in a row is logged, and once they have gone on for `holdMs` the waiting runs
   * are told (they run without a slot).
   */
  private failed(error: unknown): void {
    this.disconnect();
    const now = Date.now();
    if (!this.failing) {
      this.failing = { since: now, times: 0 };
      this.logger.warn(RESYNC_SLOT_FAILED(describeError(error)));
    }
    this.failing.times++;
    if (now - this.failing.since < this.holdMs) return;
    const gaveUp = new PglnError(RESYNC_SLOTS_UNREACHABLE(this.holdMs, describeError(error)), { cause: error });
    this.failing = undefined;
    for (const waiter of this.waiters.splice(0)) {
      waiter.done();
      waiter.reject(gaveUp);
    }
  }

  /** Gives `slot` to the first waiter still waiting (or back, if none is). */
  private handOver(slot: number): void {
    const waiter = this.waiters.shift();
    if (!waiter) return this.release(slot);
    const hold: Hold = {
      slot,
      timer: setTimeout(() => {
        this.logger.warn(RESYNC_SLOT_GIVEN_UP(slot, this.holdMs));
        this.unlock(hold);
      }, this.holdMs),
    };
    this.held.set(slot, hold);
    waiter.done();
    waiter.resolve(() => this.unlock(hold));
  }

  /** Releases `hold`'s slot if that hold is still the slot's: not once given up, or lost with its connection. */
  private unlock(hold: Hold): void {
    if (this.held.get(hold.slot) !== hold) return;
    clearTimeout(hold.timer);
    this.held.delete(hold.slot);
    this.release(hold.slot);
    if (this.waiters.length > 0) void this.poll();
  }

  /** Unlocks `slot` on the connection; one that fails is dropped (and every slot with it). */
  private release(slot: number): void {
    const { connection } = this;
    if (!connection) return;
    void connection
      .then((client) => this.query<{ ok: boolean }>(client, 'SELECT pg_advisory_unlock($1, $2) AS ok', [this.key, slot]))
      .then(({ rows }) => {
        if (!rows[0]!.ok) throw new Error(`slot ${slot} was not held any more`);
      })
      .catch((error: unknown) => {
        this.logger.warn(RESYNC_SLOT_FAILED(describeError(error)));
        this.disconnect();
      });
  }

  private drop(waiter: Waiter, reason: unknown): void {
    const index = this.waiters.indexOf(waiter);
    if (index < 0) return;
    this.waiters.splice(index, 1);
    waiter.done();
    waiter.reject(reason);
  }

  /** This instance's slot connection, opened when first needed. */
  private client(): Promise<Client> {
    if (this.connection) return this.connection;
    const connection = this.connect().then(async (client) => {
      const lost = (error?: Error) => {
        // A connection dropped already: the slots held now are another connection's.
        if (this.connection !== connection) return;
        if (this.held.size > 0) this.logger.warn(RESYNC_SLOTS_LOST([...this.held.keys()], error ? describeError(error) : 'it ended'));
        this.disconnect();
      };
      client.on('error', lost);
      client.on('end', () => lost());
      // The server gives a slot up by itself if this instance goes silent (PostgreSQL 14 and later).
      await this.query(client, `SET idle_session_timeout = ${Math.max(1, Math.round(this.holdMs))}`).catch(noop);
      return client;
    });
    this.connection = connection;
    connection.catch(() => {
      if (this.connection === connection) this.disconnect();
    });
    return connection;
  }

  /** Drops the connection: the server releases every slot it held. */
  private disconnect(): void {
    const { connection } = this;
    this.connection = undefined;
    for (const hold of this.held.values()) clearTimeout(hold.timer);
    this.held.clear();
    void connection?.then(destroyConnection, noop);
  }

  private query<R extends QueryResultRow>(client: Client, text: string, values?: unknown[]) {
    return withTimeout(client.query<R>(text, values), this.timeoutMs, () => {
      this.disconnect();
      return new PglnTimeoutError(NO_ANSWER('A resync slot query', this.timeoutMs));
    });
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

  /** Gives every slot up and stops waiting (shutdown). */
  close(): void {
    this.slots?.close();
  }

  /** Resolves with what to call when the run's handlers are done; rejects if `signal` aborts first. */
  async enter(reason: OutOfSyncReason, signal: AbortSignal): Promise<() => void> {
    if (reason === 'reconnect' && this.jitterMs > 0) await sleep(randomInt(this.jitterMs + 1), signal);
    return this.slots ? this.slots.acquire(signal) : noop;
  }
}
