import 'reflect-metadata';
import { Injectable, type Type } from '@nestjs/common';
import pg from 'pg';
import {
  OnNotification,
  OnOutOfSync,
  PglnError,
  PglnOverflowError,
  type OutOfSyncEvent,
  type OutOfSyncReason,
  type PglnService,
} from '../../../lib/index.js';
import { buildTestApp, throughProxy, type TestApp } from '../app.js';
import { databaseUrl, terminate, unique } from '../database.js';
import { TcpProxy } from '../tcp-proxy.js';
import { trackTimers } from '../timers.js';
import { waitFor } from '../wait.js';

/**
 * The real side of the model test (test/model.spec.ts): one Nest application per run, its LISTEN
 * connection through a fault-injecting proxy, subscribers that record every call on one timeline,
 * and the invariants, derived from the README's "Guarantees", checked against that timeline.
 *
 * Time is a counter (`tick`), advanced by every recorded event: "a before b" means a's tick is
 * smaller. A notification is known to have committed between its send's start and end ticks.
 */

/** Channels the commands use; the sentinel channel is index {@link SENTINEL}. */
export const CHANNELS = 3;
export const SENTINEL = CHANNELS;

/** A decorated provider of a run: present from app creation, on one channel. */
export interface DecoratedSpec {
  channel: number;
  outOfSync: boolean;
  /** Its notification handler returns a promise (awaited) rather than completing synchronously. */
  async: boolean;
  /** Its out-of-sync handler sends a notification on its own channel and waits until it arrived. */
  sendsInSync: boolean;
}

/** A listen() of a run: the same choices as a decorated provider. */
export type RuntimeSpec = DecoratedSpec;

/** One subscriber: a decorated provider (its @OnNotification and @OnOutOfSync methods) or one listen() call. */
export interface Sub {
  id: number;
  /** `D3` for decorated, `L5` for listen(), `Z` for the sentinel. */
  label: string;
  kind: 'decorated' | 'runtime' | 'sentinel';
  channel: number;
  /** The channel's generation it was added in: a channel dropped (unlistened, last listener off) starts a new one. */
  gen: number;
  outOfSync: boolean;
  async: boolean;
  sendsInSync: boolean;
  /** How the module names it in logs (`Class.method`), for overflow reports of decorated handlers. */
  handlerName: string;
  /** From this tick on, every notification sent on its channel is owed to it (its first resync's start, or when it was ready). */
  coverageStart?: number;
  /** When its removal (off(), unlisten()) began and resolved. */
  removalStart?: number;
  removedAt?: number;
  deliveries: { seq: number; start: number; end?: number }[];
  syncs: { reason: OutOfSyncReason; start: number; end?: number }[];
  /** PglnOverflowError given to onError (runtime listeners), with its tick. */
  reports: number[];
  /** A slow handler: the delivery of `seq` waits for `release`. */
  gate?: Gate;
  /** A slow first sync (listen()): its first out-of-sync handler run waits for `release`. */
  syncGate?: { started: boolean; released: boolean; release: () => void; promise: Promise<void> };
  /** listen(): when it was called, and when (and how) it settled. */
  listenCall?: number;
  listenSettled?: { tick: number; error?: unknown };
  listening?: Promise<void>;
  off?: () => Promise<void>;
}

export interface Gate {
  sub: Sub;
  channel: number;
  gen: number;
  seq: number;
  started: boolean;
  released: boolean;
  release: () => void;
  promise: Promise<void>;
}

/** A notification the test sent, by its payload (a unique sequence number). */
export interface Sent {
  seq: number;
  channel: number;
  /** Ticks before the statement (or COMMIT) was sent and after it was acknowledged; Infinity until then. */
  sendStart: number;
  sendEnd: number;
  committed: 'yes' | 'no' | 'unknown';
  /** One statement or transaction: its notifications are delivered in `index` order. */
  batch: number;
  index: number;
  origin: string;
}

interface StateEvent {
  tick: number;
  state: string;
}

/** One synchronous overflow of a channel's queue, seen through the module's log lines and onError calls. */
interface Overflow {
  tick: number;
  channel: number;
  gen: number;
  resyncLogged: boolean;
  /** A listen() was in its first resync: maybe the overflow of what it holds, not of the queue. */
  ambiguous: boolean;
  /** Handler names listed as dropped without an out-of-sync handler, if that line was logged. */
  dropped?: string;
  /** The subscribers on the channel when it happened, with and without out-of-sync handler. */
  covered: Sub[];
  uncovered: Sub[];
}

interface PendingResync {
  channel: number;
  gen: number;
  call: number;
  /** Tick and outcome once settled. */
  settled?: { tick: number; error?: unknown };
  /** Subscribers with an out-of-sync handler on the channel when called. */
  subs: Sub[];
}

export class Violation extends Error {
  override name = 'Violation';
}

/** The module's log lines that mark an overflow, for one channel name. */
const OVERFLOW_RESYNC_TEXT = 'dropped them and queued its out-of-sync handlers';
const OVERFLOW_DROPPED_TEXT = 'has no out-of-sync handler to recover with';
const OVERFLOW_DROPPED_TEXT_PLURAL = 'have no out-of-sync handler to recover with';

const immediate = () => new Promise<void>((resolve) => setImmediate(resolve));

export class Harness {
  t!: TestApp;
  pgln!: PglnService;
  proxy!: TcpProxy;
  readonly names: string[];
  readonly subs: Sub[] = [];
  readonly sent = new Map<number, Sent>();
  readonly gens = new Array<number>(CHANNELS + 1).fill(0);
  readonly gates: Gate[] = [];
  readonly journal: string[] = [];
  readonly trace: string[] = [];
  readonly states: StateEvent[] = [];
  readonly overflows: Overflow[] = [];
  readonly pendingResyncs: PendingResync[] = [];
  /** Ticks at which every notification acknowledged before was known to have reached the LISTEN connection (or been lost in a recorded disconnect). */
  readonly checkpoints: number[] = [0];
  tick = 0;
  private readonly born = Date.now();
  private seq = 0;
  private batch = 0;
  private readonly waiters = new Set<() => void>();
  private tracked?: ReturnType<typeof trackTimers>;
  private readonly unhandled: unknown[] = [];
  private readonly onUnhandled = (reason: unknown) => void this.unhandled.push(reason);
  private stateSubscription?: { unsubscribe(): void };
  closing = false;
  closedAt?: number;
  private readonly sentinel: Sub;

  private constructor(
    readonly admin: pg.Pool,
    readonly decorated: readonly DecoratedSpec[],
  ) {
    const base = unique('m');
    this.names = [...Array.from({ length: CHANNELS }, (_, i) => `${base}_c${i}`), `${base}_z`];
    this.sentinel = this.newSub('sentinel', { channel: SENTINEL, outOfSync: false, async: false, sendsInSync: false });
  }

  /** A run's harness, not started yet: {@link start}, then always {@link dispose}. */
  static create(admin: pg.Pool, decorated: readonly DecoratedSpec[]): Harness {
    return new Harness(admin, decorated);
  }

  /** Builds and starts the application of one run: its decorated providers, a proxy, the sentinel. */
  async start(): Promise<void> {
    process.on('unhandledRejection', this.onUnhandled);
    this.tracked = trackTimers();
    this.proxy = await TcpProxy.forUrl(databaseUrl()).start();
    const providers: Type[] = [this.providerFor(this.sentinel)];
    for (const spec of this.decorated) providers.push(this.providerFor(this.newSub('decorated', spec)));
    this.t = await buildTestApp(
      { providers },
      {
        ...throughProxy(this.proxy),
        healthCheck: { intervalMs: 50, timeoutMs: 200 },
        reconnect: { initialDelayMs: 20, maxDelayMs: 200 },
        maxQueuedNotifications: 20,
      },
    );
    this.pgln = this.t.pgln;
    this.hookLogs();
    this.stateSubscription = this.pgln.state$.subscribe(({ state }) => {
      this.record(`state ${state}`, (tick) => this.states.push({ tick, state }));
    });
    const decorated = this.subs.filter((sub) => sub.kind === 'decorated');
    this.note(`app with ${decorated.length ? decorated.map((sub) => `${sub.label}=${describeSpec(sub)}`).join(', ') : 'no decorated provider'}`);
    await this.t.app.init();
    const ready = this.record('app.init() resolved');
    for (const sub of this.subs) {
      if (sub.kind === 'sentinel' || !sub.outOfSync) sub.coverageStart = ready;
      else if (!sub.syncs[0] || sub.syncs[0].reason !== 'connect' || sub.syncs[0].end === undefined) {
        this.fail(`${sub.label}'s out-of-sync handler did not complete with reason 'connect' before app.init() resolved`, sub);
      }
    }
  }

  // ---------------------------------------------------------------- recording

  /**
   * Advances time, notes `text` in the trace, lets `apply` store the tick, and wakes whoever
   * waits for a condition.
   */
  record(text: string, apply?: (tick: number) => void): number {
    const tick = ++this.tick;
    apply?.(tick);
    this.trace.push(process.env.PGLN_FUZZ_TRACE ? `${tick} ${text} [+${Date.now() - this.born} ms]` : `${tick} ${text}`);
    for (const waiter of [...this.waiters]) waiter();
    return tick;
  }

  note(text: string): void {
    this.journal.push(process.env.PGLN_FUZZ_VERBOSE ? `${text} [+${Date.now() - this.born} ms]` : text);
    this.record(`# ${text}`);
  }

  /**
   * Resolves true once `condition` holds, re-evaluated after every recorded event; false after
   * `timeoutMs`.
   */
  until(condition: () => boolean, timeoutMs: number): Promise<boolean> {
    if (condition()) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (value: boolean) => {
        this.waiters.delete(waiter);
        clearTimeout(timer);
        resolve(value);
      };
      const waiter = () => {
        if (condition()) done(true);
      };
      const timer = setTimeout(() => done(condition()), timeoutMs);
      this.waiters.add(waiter);
    });
  }

  private newSub(kind: Sub['kind'], spec: DecoratedSpec): Sub {
    const id = this.subs.length;
    const label = kind === 'sentinel' ? 'Z' : kind === 'decorated' ? `D${id}` : `L${id}`;
    const sub: Sub = {
      id,
      label,
      kind,
      channel: spec.channel,
      gen: this.gens[spec.channel]!,
      outOfSync: spec.outOfSync,
      async: spec.async,
      sendsInSync: spec.sendsInSync,
      handlerName: kind === 'runtime' ? `listen(${JSON.stringify(this.names[spec.channel])})` : `Model${label}.onNotification`,
      deliveries: [],
      syncs: [],
      reports: [],
    };
    this.subs.push(sub);
    return sub;
  }

  /** A decorated provider class for `sub`, built at run time (decorators applied by hand). */
  private providerFor(sub: Sub): Type {
    const h = this;
    const provider = class {
      onNotification(payload: string) {
        return h.delivered(sub, payload);
      }
      onOutOfSync(event: OutOfSyncEvent) {
        return h.outOfSync(sub, event);
      }
    };
    Object.defineProperty(provider, 'name', { value: `Model${sub.label}` });
    const channel = this.names[sub.channel]!;
    const method = (key: 'onNotification' | 'onOutOfSync') => Object.getOwnPropertyDescriptor(provider.prototype, key)!;
    OnNotification(channel)(provider.prototype, 'onNotification', method('onNotification'));
    if (sub.outOfSync) OnOutOfSync(channel)(provider.prototype, 'onOutOfSync', method('onOutOfSync'));
    Injectable()(provider);
    return provider;
  }

  /** A notification handler: records the call; a gated one waits for its release. */
  private delivered(sub: Sub, payload: string): unknown {
    const seq = Number(payload);
    const delivery: Sub['deliveries'][number] = { seq, start: 0 };
    sub.deliveries.push(delivery);
    delivery.start = this.record(`${sub.label} <- ${payload}`);
    const gate = sub.gate?.seq === seq ? sub.gate : undefined;
    if (gate) {
      gate.started = true;
      this.record(`${sub.label} slow on ${payload}`);
      return gate.promise.then(() => void (delivery.end = this.record(`${sub.label} done ${payload}`)));
    }
    if (sub.async) return immediate().then(() => void (delivery.end = this.record(`${sub.label} done ${payload}`)));
    delivery.end = delivery.start;
    return undefined;
  }

  /** An out-of-sync handler: records its run; with sendsInSync, sends one notification on its channel meanwhile. */
  private async outOfSync(sub: Sub, event: OutOfSyncEvent): Promise<void> {
    const run: Sub['syncs'][number] = { reason: event.reason, start: 0 };
    sub.syncs.push(run);
    run.start = this.record(`${sub.label} sync:${event.reason} start`);
    sub.coverageStart ??= run.start;
    const gate = sub.syncGate;
    if (gate && !gate.started) {
      gate.started = true;
      this.record(`${sub.label} first sync hangs`);
      await gate.promise;
    }
    if (sub.sendsInSync && !this.closing) await this.sendDuringSync(sub);
    else await immediate();
    run.end = this.record(`${sub.label} sync:${event.reason} end`);
  }

  /**
   * Sends a notification on the subscriber's channel and one on the sentinel channel in one
   * statement, and waits until the sentinel's arrives (so the first has reached the LISTEN
   * connection, and is held) or the connection changes state.
   */
  private async sendDuringSync(sub: Sub): Promise<void> {
    const states = this.states.length;
    const [, z] = await this.send(`sync of ${sub.label}`, [sub.channel, SENTINEL], (items) => this.pgln.notifyMany(items)).catch(() => []);
    if (z === undefined) return;
    await this.until(() => this.deliveredTo(this.sentinel, z) || this.states.length > states || this.closing, 5_000);
  }

  deliveredTo(sub: Sub, seq: number): boolean {
    return sub.deliveries.some((d) => d.seq === seq);
  }

  /**
   * Sends one notification per channel given, in one statement (`send` gets the items), and
   * records each with the ticks around it. Resolves with their sequence numbers.
   */
  async send(
    origin: string,
    channels: readonly number[],
    send: (items: { channel: string; payload: string }[]) => Promise<unknown>,
  ): Promise<number[]> {
    const batch = ++this.batch;
    const records = channels.map((channel, index): Sent => {
      const seq = ++this.seq;
      const record: Sent = { seq, channel, sendStart: Infinity, sendEnd: Infinity, committed: 'unknown', batch, index, origin };
      this.sent.set(seq, record);
      return record;
    });
    const start = this.record(`send ${records.map((r) => `${r.seq}@${this.channelLabel(r.channel)}`).join(',')} (${origin})`);
    for (const record of records) record.sendStart = start;
    await send(records.map((r) => ({ channel: this.names[r.channel]!, payload: String(r.seq) })));
    const end = this.record(`sent ${records.map((r) => r.seq).join(',')}`);
    for (const record of records) {
      record.sendEnd = end;
      record.committed = 'yes';
    }
    return records.map((r) => r.seq);
  }

  /** Notifications inside a transaction on an admin connection, committed or rolled back. */
  async sendInTransaction(origin: string, channel: number, count: number, commit: boolean): Promise<void> {
    const client = await this.admin.connect();
    const batch = ++this.batch;
    const records: Sent[] = [];
    try {
      await client.query('BEGIN');
      for (let index = 0; index < count; index++) {
        const seq = ++this.seq;
        const record: Sent = { seq, channel, sendStart: Infinity, sendEnd: Infinity, committed: 'unknown', batch, index, origin };
        this.sent.set(seq, record);
        records.push(record);
        await this.pgln.notify(this.names[channel]!, String(seq), { executor: client });
      }
      const start = this.record(`${commit ? 'commit' : 'rollback'} ${records.map((r) => `${r.seq}@${this.channelLabel(channel)}`).join(',')} (${origin})`);
      for (const record of records) record.sendStart = start;
      await client.query(commit ? 'COMMIT' : 'ROLLBACK');
      const end = this.record(`${commit ? 'committed' : 'rolled back'} ${records.map((r) => r.seq).join(',')}`);
      for (const record of records) {
        record.sendEnd = end;
        record.committed = commit ? 'yes' : 'no';
      }
    } finally {
      client.release();
    }
  }

  channelLabel(channel: number): string {
    return channel === SENTINEL ? 'z' : `c${channel}`;
  }

  /** Overflow log lines and handler failures, as they happen. */
  private hookLogs(): void {
    const { logs } = this.t;
    const observe = (level: string, message: unknown) => {
      const text = String(message);
      const channel = this.names.findIndex((name) => text.startsWith(`Channel ${JSON.stringify(name)}:`));
      if (channel >= 0 && (text.includes(OVERFLOW_RESYNC_TEXT) || text.includes(OVERFLOW_DROPPED_TEXT) || text.includes(OVERFLOW_DROPPED_TEXT_PLURAL))) {
        this.overflowLogged(channel, text);
      } else if (level === 'error' && text.includes(' failed on channel ')) {
        this.record(`!! ${text.split('\n')[0]}`);
        this.later(`a handler failed: ${text.split('\n')[0]}`);
      }
    };
    for (const level of ['warn', 'error'] as const) {
      const original = logs[level];
      logs[level] = (message: unknown, ...rest: unknown[]) => {
        observe(level, message);
        return original(message, ...rest);
      };
    }
  }

  private overflowLogged(channel: number, text: string): void {
    const resync = text.includes(OVERFLOW_RESYNC_TEXT);
    const tick = this.record(`overflow on ${this.channelLabel(channel)}: ${resync ? 'resync queued' : 'dropped, reported'}`);
    const last = this.overflows.at(-1);
    // Both lines of one overflow come from one synchronous call: nothing else is recorded between them.
    let overflow = last && last.channel === channel && this.lastOverflowTick === tick - 1 ? last : undefined;
    if (!overflow) {
      const on = this.activeOn(channel).filter((sub) => sub.coverageStart !== undefined && sub.coverageStart < tick);
      // With a listen() in its first resync, this may be its own hold overflowing (same log line):
      // then only that it runs its out-of-sync handler again is certain.
      const firstSyncs = on.filter((sub) => this.pending(sub));
      overflow = {
        tick,
        channel,
        gen: this.gens[channel]!,
        resyncLogged: false,
        ambiguous: firstSyncs.length > 0,
        covered: firstSyncs.length ? firstSyncs.filter((sub) => sub.outOfSync) : on.filter((sub) => sub.outOfSync),
        uncovered: firstSyncs.length ? [] : on.filter((sub) => !sub.outOfSync),
      };
      this.overflows.push(overflow);
    }
    this.lastOverflowTick = tick;
    if (resync) overflow.resyncLogged = true;
    else overflow.dropped = text;
  }

  private lastOverflowTick = -1;

  // ---------------------------------------------------------------- model helpers

  activeOn(channel: number): Sub[] {
    return this.subs.filter((sub) => sub.channel === channel && sub.removalStart === undefined && sub.gen === this.gens[channel]);
  }

  /** A slow handler holds the channel's current generation (its queue waits behind it). */
  blocked(channel: number): boolean {
    return this.gates.some((gate) => gate.channel === channel && gate.gen === this.gens[channel] && gate.started && !gate.released);
  }

  /** A slow handler or a hanging first resync: a resync() of the channel waits for it. */
  held(channel: number): boolean {
    return this.blocked(channel) || this.hung(channel);
  }

  anyBlocked(): boolean {
    return Array.from({ length: CHANNELS }, (_, c) => c).some((c) => this.blocked(c));
  }

  get reconnects(): number {
    return this.states.filter((s) => s.state === 'reconnecting').length;
  }

  // ---------------------------------------------------------------- commands

  /** listen(), awaited: resolves with the new subscriber (rejects as listen() does). */
  async listen(spec: RuntimeSpec): Promise<Sub> {
    const sub = this.startListen(spec);
    await sub.listening;
    if (sub.listenSettled?.error !== undefined) throw sub.listenSettled.error;
    return sub;
  }

  /**
   * Calls listen() without waiting for it; `slow`: its first out-of-sync handler run hangs until
   * {@link release}. `sub.listening` resolves once the call settled (its outcome in `listenSettled`).
   */
  startListen(spec: RuntimeSpec, { slow = false, why = '' } = {}): Sub {
    const sub = this.newSub('runtime', spec);
    if (slow) {
      let release!: () => void;
      const promise = new Promise<void>((resolve) => (release = resolve));
      sub.syncGate = { started: false, released: false, release, promise };
    }
    this.note(`listen ${sub.label}=${describeSpec(spec)}${slow ? ', its first resync hangs' : ''}${why}`);
    sub.listenCall = this.record(`listen ${sub.label} on ${this.channelLabel(spec.channel)}`);
    const call = this.pgln.listen(this.names[spec.channel]!, {
      onNotification: (payload: string) => this.delivered(sub, payload),
      ...(spec.outOfSync ? { onOutOfSync: (event: OutOfSyncEvent) => this.outOfSync(sub, event) } : {}),
      onError: (error) => {
        if (error instanceof PglnOverflowError) {
          sub.reports.push(this.record(`${sub.label} onError overflow (${error.dropped} dropped)`));
        } else {
          this.record(`${sub.label} onError ${String(error)}`);
          this.later(`unexpected error given to ${sub.label}'s onError: ${String(error)}`, sub);
        }
      },
    });
    sub.listening = call.then(
      (off) => {
        sub.off = off;
        this.record(`listen ${sub.label} resolved`, (tick) => (sub.listenSettled = { tick }));
        this.checkListen(sub);
      },
      (error: unknown) => {
        this.record(`listen ${sub.label} rejected: ${String(error)}`, (tick) => (sub.listenSettled = { tick, error }));
        // Only a listener removed (unlisten) or closed before its first sync may fail.
        if (sub.removalStart === undefined && !this.closing) this.later(`listen() of ${sub.label} rejected: ${String(error)}`, sub);
      },
    );
    return sub;
  }

  /** listen() resolved after its onOutOfSync completed with reason 'listen'. */
  private checkListen(sub: Sub): void {
    const ready = sub.listenSettled!.tick;
    if (!sub.outOfSync) {
      sub.coverageStart = ready;
      return;
    }
    // (A resync through the queue, after a reconnect say, may have started since: it need not have ended.)
    const first = sub.syncs[0];
    if (!first || first.reason !== 'listen' || first.start < sub.listenCall! || first.end === undefined || first.end > ready) {
      this.later(`listen() of ${sub.label} resolved (tick ${ready}) before its out-of-sync handler completed with reason 'listen'`, sub);
    }
  }

  /** A listen() that has not settled yet: its first sync has not completed. */
  pending(sub: Sub): boolean {
    return sub.kind === 'runtime' && sub.listenSettled === undefined;
  }

  /** A listen() whose first resync hangs (in its channel's current generation). */
  hung(channel: number): boolean {
    return this.activeOn(channel).some((sub) => sub.syncGate?.started && !sub.syncGate.released);
  }

  /** listen() whose first resync hangs until {@link release}: its channel flows meanwhile, held for it alone. */
  async slowListen(spec: RuntimeSpec): Promise<void> {
    const sub = this.startListen({ ...spec, outOfSync: true }, { slow: true });
    const reconnects = this.reconnects;
    if (await this.until(() => sub.syncGate!.started, 5_000)) return;
    if (this.reconnects === reconnects) this.fail(`the first resync of ${sub.label} did not start within 5 s`, sub);
  }

  async off(sub: Sub): Promise<void> {
    this.note(`off ${sub.label} (on ${this.channelLabel(sub.channel)})`);
    sub.removalStart = this.record(`off ${sub.label}`);
    await sub.off!();
    sub.removedAt = this.record(`off ${sub.label} resolved`);
    if (this.activeOn(sub.channel).length === 0) this.gens[sub.channel]!++;
  }

  async unlisten(channel: number): Promise<void> {
    const subs = this.activeOn(channel);
    this.note(`unlisten ${this.channelLabel(channel)} (removes ${subs.map((s) => s.label).join(', ')})`);
    const start = this.record(`unlisten ${this.channelLabel(channel)}`);
    for (const sub of subs) sub.removalStart = start;
    await this.pgln.unlisten(this.names[channel]!);
    const end = this.record(`unlisten ${this.channelLabel(channel)} resolved`);
    for (const sub of subs) sub.removedAt = end;
    this.gens[channel]!++;
  }

  async resync(channel: number): Promise<void> {
    const blocked = this.blocked(channel) || this.hung(channel);
    this.note(`resync ${this.channelLabel(channel)}${blocked ? ' (waits for a slow handler or first resync: not awaited)' : ''}`);
    const pending: PendingResync = {
      channel,
      gen: this.gens[channel]!,
      call: this.record(`resync ${this.channelLabel(channel)}`),
      subs: this.activeOn(channel).filter((sub) => sub.outOfSync),
    };
    this.pendingResyncs.push(pending);
    const done = this.pgln.resync(this.names[channel]!).then(
      () => void this.record(`resync ${this.channelLabel(channel)} resolved`, (tick) => (pending.settled = { tick })),
      (error: unknown) => void this.record(`resync ${this.channelLabel(channel)} rejected: ${String(error)}`, (tick) => (pending.settled = { tick, error })),
    );
    if (!blocked) await done;
  }

  /** Makes a subscriber's handler hang on the next notification of its channel, until {@link release}. */
  async block(sub: Sub): Promise<boolean> {
    this.note(`block ${this.channelLabel(sub.channel)}: ${sub.label}'s handler hangs`);
    let release!: () => void;
    const promise = new Promise<void>((resolve) => (release = resolve));
    const gate: Gate = { sub, channel: sub.channel, gen: sub.gen, seq: this.seq + 1, started: false, released: false, release, promise };
    sub.gate = gate;
    this.gates.push(gate);
    const reconnects = this.reconnects;
    const [seq] = await this.send('block', [sub.channel], ([item]) => this.pgln.notify(item!.channel, item!.payload));
    if (seq !== gate.seq) throw new Error('harness: gate sequence mismatch');
    if (await this.until(() => gate.started, 5_000)) return true;
    if (this.reconnects > reconnects) {
      // Lost in a disconnect: no block this time.
      gate.released = true;
      gate.release();
      return false;
    }
    this.fail(`${sub.label} never received ${seq}, sent on its channel while live`, sub);
  }

  async release(channel: number): Promise<void> {
    const gates = this.gates.filter((gate) => gate.channel === channel && !gate.released);
    const syncs = this.subs.filter((sub) => sub.channel === channel && sub.syncGate && !sub.syncGate.released);
    this.note(`release ${this.channelLabel(channel)} (${[...gates.map((g) => g.sub.label), ...syncs.map((sub) => `${sub.label}'s first resync`)].join(', ')})`);
    for (const gate of gates) {
      gate.released = true;
      gate.release();
    }
    for (const sub of syncs) {
      sub.syncGate!.released = true;
      sub.syncGate!.release();
    }
    const listens = syncs.filter((sub) => this.pending(sub));
    if (!(await this.until(() => listens.every((sub) => !this.pending(sub)), 10_000))) {
      this.fail(`listen() of ${listens.filter((sub) => this.pending(sub)).map((sub) => sub.label).join(', ')} still pending 10 s after its first resync was released`);
    }
  }

  async fault(kind: 'kill' | 'reset' | 'blackhole' | 'refuse', whileDown: readonly number[], listenWhileDown?: RuntimeSpec): Promise<void> {
    this.note(`${kind}${whileDown.length ? `, sending on ${whileDown.map((c) => this.channelLabel(c)).join(',')} meanwhile` : ''}`);
    const before = this.reconnects;
    const lost = () => this.until(() => this.reconnects > before, 10_000);
    let noticed: boolean;
    switch (kind) {
      case 'kill':
        noticed = false;
        // The backend may be between two connections (a spurious loss): try again until one dies.
        for (let i = 0; i < 10 && !noticed; i++) {
          await terminate(this.admin, `${this.t.appName}-listener`);
          noticed = await this.until(() => this.reconnects > before, 1_000);
        }
        break;
      case 'reset':
        this.proxy.resetAll();
        noticed = await lost();
        break;
      case 'blackhole':
        this.proxy.blackhole(true);
        noticed = await lost();
        break;
      case 'refuse': {
        const refused = this.proxy.refused;
        this.proxy.refuse(true);
        this.proxy.resetAll();
        noticed = await lost();
        if (noticed) await waitFor('two refused attempts', () => this.proxy.refused >= refused + 2);
        break;
      }
    }
    if (!noticed) this.fail(`the ${kind} was not noticed within 10 s (no 'reconnecting')`);
    for (const channel of whileDown) await this.send(`while down`, [channel], ([item]) => this.pgln.notify(item!.channel, item!.payload));
    const listener = listenWhileDown && this.startListen(listenWhileDown, { why: ' (while disconnected)' });
    if (kind === 'blackhole') this.proxy.blackhole(false);
    if (kind === 'refuse') this.proxy.refuse(false);
    const lossTick = this.states.filter((s) => s.state === 'reconnecting').at(-1)!.tick;
    if (!(await this.until(() => this.states.some((s) => s.state === 'syncing' && s.tick > lossTick), 20_000))) {
      this.fail(`no new connection LISTENed within 20 s after the ${kind}`);
    }
    if (!this.anyBlocked() && !(await this.until(() => this.pgln.state === 'live', 20_000))) {
      this.fail(`the state did not return to 'live' within 20 s after the ${kind} (it is '${this.pgln.state}')`);
    }
    if (listener && !(await this.until(() => !this.pending(listener), 20_000))) {
      this.fail(`listen() of ${listener.label}, called while disconnected, still pending 20 s after the ${kind}`, listener);
    }
  }

  // ---------------------------------------------------------------- quiescence

  /**
   * Waits until everything sent so far has been handled: sends a marker on every channel that
   * is not held by a slow handler, plus one on the sentinel channel, in one statement, and waits
   * until every subscriber of those channels received its marker. Retries when the connection
   * was lost meanwhile. Then checks every invariant.
   */
  async settle(): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const usable = () => this.pgln.state === 'live' || (this.pgln.state === 'syncing' && this.anyBlocked());
      if (!(await this.until(usable, 20_000))) this.fail(`the state is '${this.pgln.state}' 20 s after the last command`);
      const channels = [...Array.from({ length: CHANNELS }, (_, c) => c).filter((c) => this.activeOn(c).length > 0 && !this.blocked(c)), SENTINEL];
      const reconnects = this.reconnects;
      const overflows = this.overflows.length;
      const seqs = await this.send('markers', channels, (items) => this.pgln.notifyMany(items));
      const markers = channels.map((channel, i) => ({ channel, seq: seqs[i]! }));
      // A listen() still in its first resync holds what arrives for itself: it is checked once it completed.
      const ready = (channel: number) => this.activeOn(channel).filter((sub) => !this.pending(sub));
      const arrived = () => markers.every(({ channel, seq }) => ready(channel).every((sub) => this.deliveredTo(sub, seq)));
      // A marker may be lost with the connection, or dropped by an overflow (a resync held behind a
      // slow handler, whose handler sends, can push the queue over the limit): then send new ones.
      const lost = () => this.reconnects > reconnects || this.overflows.length > overflows;
      const ok = await this.until(() => arrived() || lost(), 5_000);
      if (lost()) {
        if (attempt >= 5) this.fail('the connection kept dropping (or the queue overflowing) while settling');
        continue;
      }
      if (!ok) {
        const missing = markers.flatMap(({ channel, seq }) =>
          ready(channel).filter((sub) => !this.deliveredTo(sub, seq)).map((sub) => `${sub.label} (marker ${seq})`),
        );
        this.fail(`markers sent while live never reached ${missing.join(', ')}`, this.subs.find((s) => missing[0]?.startsWith(`${s.label} `)));
      }
      this.checkpoints.push(this.sent.get(seqs[0]!)!.sendStart);
      // A resync() held behind a slow handler settles a few promise turns after its handlers ran.
      await this.until(() => this.pendingResyncs.every((call) => call.settled || this.mayWait(call)), 2_000);
      const holding = Array.from({ length: CHANNELS }, (_, c) => c).some((c) => this.held(c));
      if (!holding && !(await waitFor('stats().queued to be 0', () => this.pgln.stats().queued === 0, { timeoutMs: 2_000 }).then(() => true, () => false))) {
        this.fail(`stats().queued is ${this.pgln.stats().queued} with every channel settled`);
      }
      this.check(new Map(markers.map(({ channel, seq }) => [channel, this.sent.get(seq)!])));
      return;
    }
  }

  // ---------------------------------------------------------------- invariants
  //
  // Derived from the README's "Guarantees" and "API" (and lib/pgln.channel.ts), each as weak as it
  // can be while still catching a hold that lets notifications through during a resync, a skipped
  // resync, and a notification delivered twice:
  //
  // 1. Order: per subscriber, none twice, none rolled back, none of another channel, and never a
  //    notification after one that was sent after it had been acknowledged (PostgreSQL delivers in
  //    commit order, and the module per channel in that order, across reconnects); one statement's
  //    (or transaction's) in their order.
  // 2. Hold: a subscriber's notification handler never runs while its own out-of-sync handler runs.
  // 3. Removal: no handler starts once off()/unlisten() (or app.close()) resolved.
  // 4. Completeness: a notification sent on its channel while the subscriber was in sync reaches it,
  //    unless it may have committed while no LISTEN connection was up (from the last checkpoint
  //    before a loss to the next LISTEN), or an overflow of that channel came after it was sent. A
  //    subscriber without out-of-sync handler may lose those silently; one with must resync (5).
  //    Notifications the LISTEN connection received are never excused by a resync: "Notifications
  //    received before the loss are delivered before the resync", and those that arrive during it
  //    "are held until they finish, then delivered".
  // 5. Reconnect: after every loss, each subscriber with an out-of-sync handler that was there
  //    before runs it with reason 'reconnect' between the loss and the next 'live'.
  // 6. Overflow: each subscriber of the channel with an out-of-sync handler runs it afterwards (once
  //    the channel flows again); each one without is told (onError gets a PglnOverflowError, or
  //    the log line names the decorated handler).
  // 7. listen() resolves after its onOutOfSync completed with reason 'listen'; app.init() after every
  //    decorated one completed with reason 'connect'; resync() after every out-of-sync handler of
  //    the channel ran again (it rejects only when the channel went away).
  // Plus, per command and at the end: the state returns to 'live' after every fault, stats().queued
  // is 0 once everything settled, no unhandled rejection, and after app.close() no timer and no
  // socket through the proxy.

  /** Disconnects: from the last checkpoint before the loss to the next LISTEN ('syncing'). */
  private windows(): { start: number; loss: number; end: number; live: number }[] {
    const windows: { start: number; loss: number; end: number; live: number }[] = [];
    for (const event of this.states) {
      if (event.state !== 'reconnecting') continue;
      const start = Math.max(...this.checkpoints.filter((tick) => tick < event.tick));
      const end = this.states.find((s) => s.state === 'syncing' && s.tick > event.tick)?.tick ?? Infinity;
      const live = this.states.find((s) => s.state === 'live' && s.tick > event.tick)?.tick ?? Infinity;
      windows.push({ start, loss: event.tick, end, live });
    }
    return windows;
  }

  /**
   * Every invariant, over the whole timeline. `markers`: the channels just settled, with the
   * marker every subscriber of theirs received (completeness is checked up to it).
   */
  check(markers: Map<number, Sent> = new Map()): void {
    const windows = this.windows();
    for (const sub of this.subs) {
      this.checkOrder(sub);
      this.checkNoOverlap(sub);
      this.checkRemoval(sub);
    }
    for (const [channel, marker] of markers) {
      for (const sub of this.activeOn(channel)) if (!this.pending(sub)) this.checkComplete(sub, marker, windows);
    }
    this.checkResyncAfterReconnect(windows);
    this.checkOverflows();
    this.checkResyncCalls();
    if (this.unhandled.length) this.fail(`unhandled rejection: ${this.unhandled.map(String).join('; ')}`);
    const first = this.violations[0];
    if (first) this.fail(first.message, first.sub);
  }

  /** In send order, none twice, none rolled back, none of another channel. */
  private checkOrder(sub: Sub): void {
    const seen = new Set<number>();
    let latest: Sent | undefined;
    const lastIndex = new Map<number, number>();
    for (const { seq } of sub.deliveries) {
      const n = this.sent.get(seq);
      if (!n) return this.fail(`${sub.label} received a payload the test never sent: ${seq}`, sub);
      if (n.channel !== sub.channel) this.fail(`${sub.label} (on ${this.channelLabel(sub.channel)}) received ${seq}, sent on ${this.channelLabel(n.channel)}`, sub);
      if (n.committed === 'no') this.fail(`${sub.label} received ${seq}, whose transaction rolled back`, sub);
      if (seen.has(seq)) this.fail(`${sub.label} received ${seq} twice`, sub);
      seen.add(seq);
      if (latest && n.sendEnd < latest.sendStart) {
        this.fail(`${sub.label} received ${seq} after ${latest.seq}, though ${seq} was sent (and acknowledged) before ${latest.seq} was sent`, sub);
      }
      const index = lastIndex.get(n.batch);
      if (index !== undefined && n.index < index) this.fail(`${sub.label} received ${seq} after a later notification of the same statement`, sub);
      lastIndex.set(n.batch, n.index);
      if (!latest || n.sendStart > latest.sendStart) latest = n;
    }
  }

  /** No notification handler of a subscriber runs while its own out-of-sync handler runs. */
  private checkNoOverlap(sub: Sub): void {
    for (const sync of sub.syncs) {
      const syncEnd = sync.end ?? Infinity;
      for (const delivery of sub.deliveries) {
        const deliveryEnd = delivery.end ?? Infinity;
        if (delivery.start < syncEnd && sync.start < deliveryEnd) {
          this.fail(`${sub.label}'s notification handler ran (${delivery.seq}, ticks ${delivery.start}-${delivery.end ?? '…'}) while its out-of-sync handler ran (${sync.reason}, ticks ${sync.start}-${sync.end ?? '…'})`, sub);
        }
      }
    }
  }

  /** No handler called once off()/unlisten() resolved, nor after app.close() resolved. */
  private checkRemoval(sub: Sub): void {
    const after = Math.min(sub.removedAt ?? Infinity, this.closedAt ?? Infinity);
    const late = sub.deliveries.find((d) => d.start > after) ?? sub.syncs.find((s) => s.start > after);
    if (late) this.fail(`${sub.label}'s handler was called at tick ${late.start}, after its removal (or close) resolved at ${after}`, sub);
  }

  /**
   * Every notification sent on its channel while it was in sync is delivered, unless it may have
   * been sent while disconnected (from the last checkpoint before a loss to the next LISTEN) or an
   * overflow of the channel came after it was sent.
   */
  private checkComplete(sub: Sub, marker: Sent, windows: { start: number; end: number }[]): void {
    if (sub.coverageStart === undefined) return;
    const delivered = new Set(sub.deliveries.map((d) => d.seq));
    const overflows = this.overflows.filter((o) => o.channel === sub.channel).map((o) => o.tick);
    for (const n of this.sent.values()) {
      if (n.channel !== sub.channel || n.committed !== 'yes' || delivered.has(n.seq)) continue;
      if (n.sendStart <= sub.coverageStart || n.sendEnd >= marker.sendStart) continue;
      if (windows.some((w) => n.sendEnd > w.start && n.sendStart < w.end)) continue;
      if (overflows.some((tick) => tick > n.sendStart)) continue;
      this.fail(
        `${sub.label} never received ${n.seq} (${n.origin}, sent at ticks ${n.sendStart}-${n.sendEnd} while it was in sync and connected, no overflow since), though it received the later marker ${marker.seq}`,
        sub,
      );
    }
  }

  /** After every reconnect, each subscriber with an out-of-sync handler that was there before resyncs (reason 'reconnect') before 'live'. */
  private checkResyncAfterReconnect(windows: { loss: number; live: number }[]): void {
    for (const { loss, live } of windows) {
      for (const sub of this.subs) {
        if (!sub.outOfSync || sub.coverageStart === undefined || sub.coverageStart > loss) continue;
        // A listen() whose first resync ran beside the queue at the loss runs it again before it resolves.
        const settled = sub.kind === 'runtime' ? (sub.listenSettled?.tick ?? Infinity) : 0;
        const by = settled > loss ? Math.max(live, settled) : live;
        if (by === Infinity) continue;
        if (sub.removalStart !== undefined && sub.removalStart < by) continue;
        if (!sub.syncs.some((s) => s.start > loss && s.start < by && s.reason === 'reconnect')) {
          this.fail(`${sub.label} has an out-of-sync handler, but it did not run with reason 'reconnect' between the loss (tick ${loss}) and ${by === live ? `'live' (tick ${live})` : `its listen() resolving (tick ${by})`}`, sub);
        }
      }
    }
  }

  /**
   * An overflow resyncs every subscriber of the channel that has an out-of-sync handler (once
   * the channel flows again), and reports the count to every listen() without one.
   */
  private checkOverflows(): void {
    for (const overflow of this.overflows) {
      const flowing = overflow.gen !== this.gens[overflow.channel] || !this.held(overflow.channel);
      const resynced = (sub: Sub) => sub.removalStart !== undefined || sub.syncs.some((s) => s.start > overflow.tick);
      if (flowing && overflow.ambiguous) {
        // The queue's overflow resyncs them all; what one of them holds overflowing, that one.
        if (!overflow.covered.some(resynced)) {
          this.fail(`none of ${overflow.covered.map((sub) => sub.label).join(', ')} (in their first resync) ran its out-of-sync handler again after the overflow of ${this.channelLabel(overflow.channel)} at tick ${overflow.tick}`, overflow.covered[0]);
        }
      } else if (flowing) {
        for (const sub of overflow.covered) {
          if (!resynced(sub)) this.fail(`${sub.label} has an out-of-sync handler, but it did not run after the overflow of ${this.channelLabel(overflow.channel)} at tick ${overflow.tick}`, sub);
        }
      }
      if (overflow.covered.length > 0 && !overflow.resyncLogged) this.fail(`the overflow at tick ${overflow.tick} queued no resync`);
      for (const sub of overflow.uncovered) {
        const told = sub.kind === 'runtime' ? sub.reports.some((tick) => tick > overflow.tick && tick <= overflow.tick + 3 + this.subs.length) : overflow.dropped?.includes(sub.handlerName);
        if (!told) this.fail(`${sub.label} has no out-of-sync handler and was not told of the overflow of ${this.channelLabel(overflow.channel)} at tick ${overflow.tick}`, sub);
      }
    }
  }

  /** A resync() may still wait while its channel is held (a slow handler, a hanging first resync). */
  private mayWait(call: PendingResync): boolean {
    return this.gens[call.channel] === call.gen && this.held(call.channel);
  }


  /** resync() resolves after every out-of-sync handler of the channel ran (started after the call); it rejects only if the channel went away. */
  private checkResyncCalls(): void {
    for (const call of this.pendingResyncs) {
      const gone = this.gens[call.channel] !== call.gen;
      if (!call.settled) {
        if (!this.mayWait(call)) this.fail(`resync(${this.channelLabel(call.channel)}) called at tick ${call.call} has not settled, though its channel ${gone ? 'was dropped' : 'flows'}`);
        continue;
      }
      if (call.settled.error !== undefined) {
        if (!gone || !(call.settled.error instanceof PglnError)) this.fail(`resync(${this.channelLabel(call.channel)}) rejected: ${String(call.settled.error)}`);
        continue;
      }
      const droppedBefore = this.subs.some((sub) => sub.channel === call.channel && sub.gen === call.gen && sub.removedAt !== undefined && sub.removedAt < call.settled!.tick && sub.removalStart! > call.call);
      if (gone && droppedBefore && !call.subs.some((sub) => sub.syncs.some((s) => s.start > call.call))) {
        this.fail(`resync(${this.channelLabel(call.channel)}) resolved (tick ${call.settled.tick}) though its channel was unlistened before any out-of-sync handler ran for it`);
      }
      for (const sub of call.subs) {
        if (sub.removalStart !== undefined && sub.removalStart < call.settled.tick) continue;
        if (!sub.syncs.some((s) => s.start > call.call && s.end !== undefined && s.end < call.settled!.tick)) {
          this.fail(`resync(${this.channelLabel(call.channel)}) resolved at tick ${call.settled.tick} without ${sub.label}'s out-of-sync handler having run since the call (tick ${call.call})`, sub);
        }
      }
    }
  }

  /** A violation seen inside a callback of the module (a logger, onError): thrown by the next {@link check}, not into the module. */
  private later(message: string, sub?: Sub): void {
    this.violations.push({ message, sub });
  }

  private readonly violations: { message: string; sub?: Sub }[] = [];

  fail(message: string, sub?: Sub): never {
    const lines = [message, '', 'What the run did:', ...this.journal.map((line, i) => `  ${i}. ${line}`)];
    if (sub) {
      lines.push('', `Timeline of ${sub.label} (last 40 entries mentioning it, and state changes):`);
      const mine = this.trace.filter((line) => new RegExp(`(^\\d+ (${sub.label} |state |# ))|[ ,]${sub.label}[ ,)]`).test(line));
      lines.push(...mine.slice(-40).map((line) => `  ${line}`));
    } else {
      lines.push('', 'Timeline (last 40 entries):', ...this.trace.slice(-40).map((line) => `  ${line}`));
    }
    throw new Violation(lines.join('\n'));
  }

  // ---------------------------------------------------------------- end of a run

  /** Releases slow handlers, settles, checks, closes: nothing may be left running. */
  async finish(): Promise<void> {
    for (let c = 0; c < CHANNELS; c++) {
      if (this.gates.some((g) => g.channel === c && !g.released) || this.subs.some((sub) => sub.channel === c && sub.syncGate && !sub.syncGate.released)) {
        await this.release(c);
      }
    }
    await this.settle();
    await this.until(() => this.pendingResyncs.every((call) => call.settled), 5_000);
    this.check();
    this.note('app.close()');
    this.closing = true;
    await this.t.app.close();
    this.closedAt = this.record('app.close() resolved');
    if (this.pgln.state !== 'closed') this.fail(`state is '${this.pgln.state}' after app.close()`);
    await immediate();
    this.check();
    if (!(await waitFor('no socket left', () => this.proxy.openSockets === 0, { timeoutMs: 2_000 }).then(() => true, () => false))) {
      this.fail(`${this.proxy.openSockets} socket(s) still open through the proxy after app.close()`);
    }
    let pending = this.tracked!.pending();
    for (let i = 0; i < 20 && pending.length; i++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      pending = this.tracked!.pending();
    }
    if (pending.length) this.fail(`timers left after app.close(): ${pending.join(' | ')}`);
  }

  /** Frees everything, after success or failure (errors here are secondary). */
  async dispose(): Promise<void> {
    this.closing = true;
    for (const gate of this.gates) gate.release();
    for (const sub of this.subs) sub.syncGate?.release();
    if (this.t && this.closedAt === undefined) {
      let timer: NodeJS.Timeout | undefined;
      const limit = new Promise((resolve) => (timer = setTimeout(resolve, 15_000)));
      await Promise.race([this.t.app.close(), limit]).catch(() => undefined);
      clearTimeout(timer);
    }
    this.stateSubscription?.unsubscribe();
    await this.proxy?.stop().catch(() => undefined);
    this.tracked?.stop();
    process.removeListener('unhandledRejection', this.onUnhandled);
  }
}

export function describeSpec(spec: DecoratedSpec): string {
  return [
    `c${spec.channel}`,
    spec.outOfSync ? 'out-of-sync' : 'no out-of-sync',
    spec.async ? 'async' : 'sync',
    ...(spec.outOfSync && spec.sendsInSync ? ['sends during resync'] : []),
  ].join(' ');
}
