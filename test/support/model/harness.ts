import 'reflect-metadata';
import { Injectable, type Type } from '@nestjs/common';
import pg from 'pg';
import {
  OnNotification,
  OnOutOfSync,
  PglnOverflowError,
  defineChannel,
  type OutOfSyncEvent,
  type OutOfSyncReason,
  type PglnChannel,
  type PglnService,
} from '../../../lib/index.js';
import { buildTestApp, throughProxy, type TestApp } from '../app.js';
import { databaseUrl, terminate, unique } from '../database.js';
import { TcpProxy } from '../tcp-proxy.js';
import { trackTimers } from '../timers.js';
import { waitFor } from '../wait.js';
import { Invariants, mayHaveRead, type Overflow, type PendingResync } from './invariants.js';
import { ModelTable, apply, describeRows, type Change, type Rows } from './table.js';

/**
 * The real side of the model test (test/model.spec.ts): one Nest application per run, its LISTEN
 * connection through a fault-injecting proxy, a table whose every change is announced in its own
 * transaction, subscribers that keep a copy of it (reloaded by their out-of-sync handler, changed by
 * each notification as a handler that trusts it would) and record every call on one timeline, and
 * the invariants (./invariants.ts), derived from the README's "Guarantees", checked against that
 * timeline and the table.
 *
 * Time is a counter (`tick`), advanced by every recorded event: "a before b" means a's tick is
 * smaller. A notification is known to have committed between its send's start and end ticks.
 */

/** Channels the commands use; the sentinel channel is index {@link SENTINEL}. */
export const CHANNELS = 3;
export const SENTINEL = CHANNELS;
/** The exactly-once channel: its subscribers record their reload's snapshot and must apply every change once. */
export const EXACTLY_ONCE = 1;

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
  /** Its copy of its channel's rows: reloaded by its out-of-sync handler, changed by each notification. */
  copy: Rows;
  /** The highest version of each row it has seen (read or applied): what it must never go back from. */
  seen: Map<number, number>;
  /** On the exactly-once channel: its reload records a snapshot, and no change may be applied twice. */
  exactlyOnce: boolean;
  /** When its removal (off(), unlisten()) began and resolved. */
  removalStart?: number;
  removedAt?: number;
  deliveries: { seq: number; start: number; end?: number }[];
  /** Its out-of-sync handler's runs: when each began, began reading the table (its snapshot taken), and ended. */
  syncs: { reason: OutOfSyncReason; start: number; read?: number; end?: number }[];
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

/** A notification the test sent, by its payload's sequence number (unique). */
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
  /** What it announces (a marker changes nothing). */
  change?: Change;
}

export interface StateEvent {
  tick: number;
  state: string;
}

export class Violation extends Error {
  override name = 'Violation';
}

/** The module's overflow log lines: `... were waiting for <subscriber>, more than ...` / `..., which has no out-of-sync handler ...`. */
/** Makes a change's payload larger than pg_notify takes. */
const LARGE_PAD = 'x'.repeat(8_000);

const OVERFLOW_RESYNC = /were waiting for (.*), more than maxQueuedNotifications .*dropped them and queued its out-of-sync handler/;
const OVERFLOW_DROPPED = /were waiting for (.*), which has no out-of-sync handler to recover with/;
/** Held behind the fetch of a large payload: every subscriber of the channel dropped them. */
const ARRIVALS_OVERFLOW = /notifications were held behind the fetch of a large payload, more than maxQueuedNotifications/;

const immediate = () => new Promise<void>((resolve) => setImmediate(resolve));

export class Harness {
  t!: TestApp;
  pgln!: PglnService;
  proxy!: TcpProxy;
  readonly names: string[];
  /** The exactly-once channel's definition; the others are used by name. */
  readonly definitions: (PglnChannel | undefined)[];
  readonly table: ModelTable;
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
  readonly unhandled: unknown[] = [];
  private readonly onUnhandled = (reason: unknown) => void this.unhandled.push(reason);
  private stateSubscription?: { unsubscribe(): void };
  closing = false;
  closedAt?: number;
  private readonly sentinel: Sub;
  private readonly invariants = new Invariants(this);

  private constructor(
    readonly admin: pg.Pool,
    readonly decorated: readonly DecoratedSpec[],
  ) {
    const base = unique('m');
    this.names = [...Array.from({ length: CHANNELS }, (_, i) => `${base}_c${i}`), `${base}_z`];
    this.definitions = this.names.map((name, i) => (i === EXACTLY_ONCE ? defineChannel(name, { exactlyOnce: true }) : undefined));
    this.table = new ModelTable(admin, `${base}_rows`);
    this.sentinel = this.newSub('sentinel', { channel: SENTINEL, outOfSync: false, async: false, sendsInSync: false });
  }

  /** A run's harness, not started yet: {@link start}, then always {@link dispose}. */
  static create(admin: pg.Pool, decorated: readonly DecoratedSpec[]): Harness {
    return new Harness(admin, decorated);
  }

  /** Builds and starts the application of one run: its table, its decorated providers, a proxy, the sentinel. */
  async start(): Promise<void> {
    process.on('unhandledRejection', this.onUnhandled);
    this.tracked = trackTimers();
    await this.table.create(CHANNELS);
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
        largePayloads: { table: 'pgln_model_payloads' },
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
      copy: new Map(),
      seen: new Map(),
      exactlyOnce: spec.channel === EXACTLY_ONCE,
      deliveries: [],
      syncs: [],
      reports: [],
    };
    this.subs.push(sub);
    return sub;
  }

  /** A channel as subscribers and senders name it: the exactly-once channel by its definition. */
  channel(channel: number): string | PglnChannel {
    return this.definitions[channel] ?? this.names[channel]!;
  }

  /** A decorated provider class for `sub`, built at run time (decorators applied by hand). */
  private providerFor(sub: Sub): Type {
    const h = this;
    const provider = class {
      onNotification(payload: unknown) {
        return h.delivered(sub, payload);
      }
      onOutOfSync(event: OutOfSyncEvent) {
        return h.outOfSync(sub, event);
      }
    };
    Object.defineProperty(provider, 'name', { value: `Model${sub.label}` });
    const channel = this.channel(sub.channel);
    const method = (key: 'onNotification' | 'onOutOfSync') => Object.getOwnPropertyDescriptor(provider.prototype, key)!;
    OnNotification(channel as string)(provider.prototype, 'onNotification', method('onNotification'));
    if (sub.outOfSync) OnOutOfSync(channel as string)(provider.prototype, 'onOutOfSync', method('onOutOfSync'));
    Injectable()(provider);
    return provider;
  }

  /**
   * A notification handler: records the call and applies the change to the copy (an exactly-once
   * subscriber must never apply a change it has already seen); a gated one waits for its release.
   */
  private delivered(sub: Sub, payload: unknown): unknown {
    const change = (typeof payload === 'string' ? JSON.parse(payload) : payload) as Change;
    const seq = change.s;
    const delivery: Sub['deliveries'][number] = { seq, start: 0 };
    sub.deliveries.push(delivery);
    delivery.start = this.record(`${sub.label} <- ${seq}${change.k === undefined ? '' : ` (${change.d ? 'delete' : 'set'} ${change.k}:v${change.v})`}`);
    if (change.k !== undefined) {
      const seen = sub.seen.get(change.k) ?? 0;
      if (sub.exactlyOnce && change.v! <= seen) {
        this.later(`${sub.label} applied ${seq} (row ${change.k} v${change.v}) though it had seen v${seen} of that row: a change applied twice, or out of date`, sub);
      }
      apply(sub.copy, change);
      sub.seen.set(change.k, Math.max(seen, change.v!));
    }
    const gate = sub.gate?.seq === seq ? sub.gate : undefined;
    if (gate) {
      gate.started = true;
      this.record(`${sub.label} slow on ${seq}`);
      return gate.promise.then(() => void (delivery.end = this.record(`${sub.label} done ${seq}`)));
    }
    if (sub.async) return immediate().then(() => void (delivery.end = this.record(`${sub.label} done ${seq}`)));
    delivery.end = delivery.start;
    return undefined;
  }

  /**
   * An out-of-sync handler: records its run; with sendsInSync, changes a row meanwhile (committed
   * before its read, arriving after it began); then reloads its copy from the table (an
   * exactly-once subscriber in a REPEATABLE READ transaction whose snapshot it records).
   */
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
    run.read = this.record(`${sub.label} reads the table`);
    const rows = await this.reload(sub, event);
    for (const [key, version] of rows) {
      const seen = sub.seen.get(key) ?? 0;
      if (version < seen) this.later(`${sub.label} read row ${key} at v${version}, older than v${seen} it had seen: a reload went back in time`, sub);
      sub.seen.set(key, Math.max(seen, version));
    }
    sub.copy = rows;
    run.end = this.record(`${sub.label} sync:${event.reason} end (read ${describeRows(rows)})`);
  }

  /** Reads the subscriber's channel's rows, as its out-of-sync handler would. */
  private async reload(sub: Sub, event: OutOfSyncEvent): Promise<Rows> {
    const client = await this.admin.connect();
    const query = (text: string, values: unknown[]) => client.query<{ key: number; version: number }>(text, values);
    try {
      if (!sub.exactlyOnce) return await this.table.read(sub.channel, query);
      await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
      await event.snapshot(client);
      const rows = await this.table.read(sub.channel, query);
      await client.query('COMMIT');
      return rows;
    } finally {
      client.release();
    }
  }

  /**
   * Changes a row of the subscriber's channel and sends a marker on the sentinel channel, in one
   * transaction, and waits until the sentinel's arrives (so the change's notification has reached
   * the LISTEN connection, and is held) or the connection changes state.
   */
  private async sendDuringSync(sub: Sub): Promise<void> {
    const states = this.states.length;
    const [, z] = await this.send(`sync of ${sub.label}`, [sub.channel, SENTINEL]).catch(() => []);
    if (z === undefined) return;
    await this.until(() => this.deliveredTo(this.sentinel, z) || this.states.length > states || this.closing, 5_000);
  }

  deliveredTo(sub: Sub, seq: number): boolean {
    return sub.deliveries.some((d) => d.seq === seq);
  }

  /**
   * One transaction: per channel given, a change of one of its rows announced by a notification
   * (`markers`: a notification that changes nothing), sent with one `notify` each or one
   * `notifyMany` on that transaction, then COMMIT (or ROLLBACK). Records each with the ticks around
   * the COMMIT. Resolves with their sequence numbers.
   */
  async send(
    origin: string,
    channels: readonly number[],
    { how = 'notifyMany', commit = true, markers = false }: { how?: 'notify' | 'notifyMany'; commit?: boolean; markers?: boolean } = {},
  ): Promise<number[]> {
    const batch = ++this.batch;
    const records = channels.map((channel, index): Sent => {
      const seq = ++this.seq;
      const record: Sent = { seq, channel, sendStart: Infinity, sendEnd: Infinity, committed: 'unknown', batch, index, origin };
      this.sent.set(seq, record);
      return record;
    });
    const client = await this.admin.connect();
    try {
      await client.query('BEGIN');
      const items = [];
      for (const record of records) {
        const change = markers || record.channel === SENTINEL ? { s: record.seq } : await this.table.write(client, record.channel, record.seq);
        record.change = change;
        const defined = this.definitions[record.channel];
        // Every third one too large for pg_notify: it goes through the largePayloads table, and its channel waits for the fetch.
        const payload = record.seq % 3 === 0 ? { ...change, pad: LARGE_PAD } : change;
        items.push(defined ? { channel: defined, payload } : { channel: this.names[record.channel]!, payload: JSON.stringify(payload) });
      }
      if (how === 'notify') for (const item of items) await this.pgln.notify(item.channel as string, item.payload as string, { executor: client });
      else await this.pgln.notifyMany(items as { channel: string; payload: string }[], { executor: client });
      const verb = commit ? 'commit' : 'rollback';
      const start = this.record(`${verb} ${records.map((r) => `${r.seq}@${this.channelLabel(r.channel)}`).join(',')} (${origin}, ${how})`);
      for (const record of records) record.sendStart = start;
      await client.query(commit ? 'COMMIT' : 'ROLLBACK');
      const end = this.record(`${commit ? 'committed' : 'rolled back'} ${records.map((r) => r.seq).join(',')}`);
      for (const record of records) {
        record.sendEnd = end;
        record.committed = commit ? 'yes' : 'no';
      }
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw error;
    } finally {
      client.release();
    }
    return records.map((r) => r.seq);
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
      const overflow = OVERFLOW_RESYNC.exec(text) ?? OVERFLOW_DROPPED.exec(text);
      if (channel >= 0 && overflow) {
        this.overflowLogged(channel, overflow[1]!, OVERFLOW_RESYNC.test(text));
      } else if (channel >= 0 && ARRIVALS_OVERFLOW.test(text)) {
        const tick = this.record(`overflow on ${this.channelLabel(channel)} behind a fetch: every subscriber dropped them`);
        for (const resync of [true, false]) {
          const candidates = this.activeOn(channel).filter((sub) => sub.outOfSync === resync);
          if (candidates.length > 0) this.overflows.push({ tick, channel, gen: this.gens[channel]!, resync, candidates });
        }
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

  /**
   * One subscriber's queue overflowed: `name` is how the module names it (a decorated provider
   * uniquely; every listen() of a channel alike, so any of those may be the one).
   */
  private overflowLogged(channel: number, name: string, resync: boolean): void {
    const tick = this.record(`overflow on ${this.channelLabel(channel)} for ${name}: ${resync ? 'resync due' : 'dropped, reported'}`);
    const candidates = this.activeOn(channel).filter((sub) =>
      sub.kind === 'runtime' ? name === sub.handlerName && sub.outOfSync === resync : name.includes(`Model${sub.label}.`),
    );
    this.overflows.push({ tick, channel, gen: this.gens[channel]!, resync, candidates });
  }

  // ---------------------------------------------------------------- model helpers

  activeOn(channel: number): Sub[] {
    return this.subs.filter((sub) => sub.channel === channel && sub.removalStart === undefined && sub.gen === this.gens[channel]);
  }

  /** Its slow handler hangs: its queue (its alone) waits behind it, and so does a read due. */
  blocked(sub: Sub): boolean {
    return this.gates.some((gate) => gate.sub === sub && gate.started && !gate.released);
  }

  /** A subscriber of the channel's current generation hangs: a slow handler, or a first resync. */
  held(channel: number): boolean {
    return this.activeOn(channel).some((sub) => this.blocked(sub) || this.hanging(sub));
  }

  anyBlocked(): boolean {
    return this.subs.some((sub) => this.blocked(sub));
  }

  /** Its first resync (listen()) hangs. */
  hanging(sub: Sub): boolean {
    return !!sub.syncGate?.started && !sub.syncGate.released;
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
    const call = this.pgln.listen(this.channel(spec.channel) as string, {
      onNotification: (payload: unknown) => this.delivered(sub, payload),
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
    // (A resync after a reconnect, say, may have started since: it need not have ended.)
    const first = sub.syncs[0];
    if (!first || first.reason !== 'listen' || first.start < sub.listenCall! || first.end === undefined || first.end > ready) {
      this.later(`listen() of ${sub.label} resolved (tick ${ready}) before its out-of-sync handler completed with reason 'listen'`, sub);
    }
  }

  /** A listen() that has not settled yet: its first sync has not completed. */
  pending(sub: Sub): boolean {
    return sub.kind === 'runtime' && sub.listenSettled === undefined;
  }

  /** A listen() of the channel's current generation whose first resync hangs. */
  hung(channel: number): boolean {
    return this.activeOn(channel).some((sub) => this.hanging(sub));
  }

  /** listen() whose first resync hangs until {@link release}: the channel's other subscribers flow meanwhile. */
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
    const held = this.held(channel);
    this.note(`resync ${this.channelLabel(channel)}${held ? ' (waits for a slow handler or first resync: not awaited)' : ''}`);
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
    if (!held) await done;
  }

  /** Makes a subscriber's handler hang on the next notification of its channel, until {@link release}. */
  async block(sub: Sub): Promise<boolean> {
    this.note(`block ${sub.label}: its handler hangs (on ${this.channelLabel(sub.channel)})`);
    let release!: () => void;
    const promise = new Promise<void>((resolve) => (release = resolve));
    const gate: Gate = { sub, channel: sub.channel, gen: sub.gen, seq: this.seq + 1, started: false, released: false, release, promise };
    sub.gate = gate;
    this.gates.push(gate);
    const reconnects = this.reconnects;
    const [seq] = await this.send('block', [sub.channel], { how: 'notify' });
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
    this.note(`${kind}${whileDown.length ? `, changing rows of ${whileDown.map((c) => this.channelLabel(c)).join(',')} meanwhile` : ''}`);
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
    for (const channel of whileDown) await this.send(`while down`, [channel], { how: 'notify' });
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
   * Waits until everything sent so far has been handled: sends a marker (a notification that
   * changes nothing) on every channel, plus one on the sentinel channel, in one transaction, and
   * waits until every subscriber of those channels that no slow handler or first resync holds
   * received its marker. Retries when the connection was lost or a queue overflowed meanwhile.
   * Then checks every invariant, copies against the table included.
   */
  async settle(): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const usable = () => this.pgln.state === 'live' || (this.pgln.state === 'syncing' && this.anyBlocked());
      if (!(await this.until(usable, 20_000))) this.fail(`the state is '${this.pgln.state}' 20 s after the last command`);
      // An out-of-sync handler that runs or is due (a removed subscriber's too) may still change a
      // row: the markers must come after every change, or the copies are compared too early.
      await waitFor('the reads due to be done', () => this.quiet(), { timeoutMs: 10_000 }).catch(() => undefined);
      const channels = [...Array.from({ length: CHANNELS }, (_, c) => c).filter((c) => this.activeOn(c).length > 0), SENTINEL];
      const reconnects = this.reconnects;
      const overflows = this.overflows.length;
      const seqs = await this.send('markers', channels, { markers: true });
      const markers = channels.map((channel, i) => ({ channel, seq: seqs[i]! }));
      const arrived = () => markers.every(({ channel, seq }) => this.flowing(channel).every((sub) => this.deliveredTo(sub, seq)));
      // A marker may be lost with the connection, dropped by an overflow (a resync held behind a
      // slow handler, whose handler sends, can push the queue over the limit), or not delivered
      // because a read of its subscriber saw it (it arrived before that read began; or, on the
      // exactly-once channel, that read's snapshot saw its transaction): then send new ones.
      const covered = () =>
        markers.some(({ channel, seq }) =>
          this.flowing(channel).some((sub) => !this.deliveredTo(sub, seq) && sub.syncs.some((s) => s.end !== undefined && mayHaveRead(s, this.sent.get(seq)!))),
        );
      const lost = () => this.reconnects > reconnects || this.overflows.length > overflows || covered();
      const ok = await this.until(() => arrived() || lost(), 5_000);
      if (lost()) {
        if (attempt >= 8) this.fail('the connection kept dropping (or a queue overflowing, or reads seeing the markers) while settling');
        continue;
      }
      if (!ok) {
        const missing = markers.flatMap(({ channel, seq }) =>
          this.flowing(channel).filter((sub) => !this.deliveredTo(sub, seq)).map((sub) => `${sub.label} (marker ${seq})`),
        );
        this.fail(`markers sent while live never reached ${missing.join(', ')}`, this.subs.find((s) => missing[0]?.startsWith(`${s.label} `)));
      }
      this.checkpoints.push(this.sent.get(seqs[0]!)!.sendStart);
      // A resync() held behind a slow handler settles a few promise turns after its handlers ran.
      await this.until(() => this.pendingResyncs.every((call) => call.settled || this.invariants.mayWait(call)), 2_000);
      const holding = Array.from({ length: CHANNELS }, (_, c) => c).some((c) => this.held(c));
      if (!holding && !(await waitFor('stats().queued to be 0', () => this.pgln.stats().queued === 0, { timeoutMs: 2_000 }).then(() => true, () => false))) {
        this.fail(`stats().queued is ${this.pgln.stats().queued} with every channel settled`);
      }
      await this.checkConverged(markers.map(({ channel }) => channel).filter((channel) => channel !== SENTINEL));
      this.check(new Map(markers.map(({ channel, seq }) => [channel, this.sent.get(seq)!])));
      return;
    }
  }

  /**
   * No out-of-sync handler runs or is due, but those held by a slow handler or hanging: no row
   * changes but the commands'. (`stats()` tells which channels have a read due or running.)
   */
  private quiet(): boolean {
    const channels = this.pgln.stats().channels;
    const due = this.names.some((name, c) => c < CHANNELS && channels[name]?.inSync === false && !this.held(c));
    return !due && this.subs.every((sub) => this.hanging(sub) || sub.syncs.every((s) => s.end !== undefined));
  }

  /** Subscribers of the channel that nothing holds: they must have what was sent up to now. */
  private flowing(channel: number): Sub[] {
    return this.activeOn(channel).filter((sub) => !this.pending(sub) && !this.blocked(sub));
  }

  /**
   * Convergence: every subscriber with an out-of-sync handler that nothing holds has a copy equal
   * to the table, row by row, once it has every committed change: delivered, or seen by a read of
   * its own (a change committed after the markers, by a read's own handler, comes after them).
   */
  private async checkConverged(channels: readonly number[]): Promise<void> {
    for (const channel of channels) {
      const subs = this.flowing(channel).filter((s) => s.outOfSync);
      const missing = (sub: Sub) =>
        [...this.sent.values()].find(
          (n) =>
            n.channel === channel &&
            n.committed === 'yes' &&
            n.sendStart > (sub.coverageStart ?? Infinity) &&
            !this.deliveredTo(sub, n.seq) &&
            !sub.syncs.some((s) => s.end !== undefined && mayHaveRead(s, n)),
        );
      if (!(await this.until(() => subs.every((sub) => !missing(sub)), 5_000))) {
        const sub = subs.find((s) => missing(s))!;
        this.fail(`${sub.label} never received ${missing(sub)!.seq}, nor read the table after it committed`, sub);
      }
      const table = await this.table.read(channel);
      for (const sub of subs) {
        if (describeRows(sub.copy) !== describeRows(table)) {
          this.fail(`${sub.label}'s copy of ${this.channelLabel(channel)} is ${describeRows(sub.copy)}, the table is ${describeRows(table)}: it ended out of date`, sub);
        }
      }
    }
  }

  /** Every invariant over the whole timeline (see ./invariants.ts); `markers`: the channels just settled, with their marker. */
  check(markers: Map<number, Sent> = new Map()): void {
    this.invariants.check(markers);
    if (this.unhandled.length) this.fail(`unhandled rejection: ${this.unhandled.map(String).join('; ')}`);
    const first = this.violations[0];
    if (first) this.fail(first.message, first.sub);
  }

  /** A violation seen inside a callback of the module (a logger, onError, a handler): thrown by the next {@link check}, not into the module. */
  later(message: string, sub?: Sub): void {
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
    await this.table.drop().catch(() => undefined);
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
