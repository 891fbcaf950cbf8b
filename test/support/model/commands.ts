import fc from 'fast-check';
import { CHANNELS, describeSpec, type DecoratedSpec, type Harness, type RuntimeSpec } from './harness.js';

/**
 * The commands of the model test. Each acts on the running application, then waits until
 * everything sent has been handled and checks every invariant ({@link Harness.settle}). The
 * model a command checks its precondition against is the harness itself: which subscribers are
 * active, which channels a slow handler holds. What each subscriber must have seen is derived
 * from the recorded timeline by the harness's checks.
 */
type Model = Harness;

abstract class Step implements fc.AsyncCommand<Model, Harness> {
  abstract check(model: Readonly<Model>): boolean;
  protected abstract act(h: Harness): Promise<void>;
  abstract toString(): string;

  async run(_model: Model, h: Harness): Promise<void> {
    await this.act(h);
    await h.settle();
  }
}

const MAX_SUBSCRIBERS = 8;
const c = (channel: number) => `c${channel}`;

class Listen extends Step {
  constructor(private readonly spec: RuntimeSpec) {
    super();
  }
  check(m: Readonly<Model>) {
    return m.subs.filter((sub) => sub.kind !== 'sentinel' && sub.removalStart === undefined).length < MAX_SUBSCRIBERS;
  }
  protected async act(h: Harness) {
    await h.listen(this.spec);
  }
  toString() {
    return `listen(${describeSpec(this.spec)})`;
  }
}

/** A listen() whose first resync hangs until released: the channel flows meanwhile, held for it alone. */
class SlowListen extends Step {
  constructor(private readonly spec: RuntimeSpec) {
    super();
  }
  check(m: Readonly<Model>) {
    return m.subs.filter((sub) => sub.kind !== 'sentinel' && sub.removalStart === undefined).length < MAX_SUBSCRIBERS;
  }
  protected async act(h: Harness) {
    await h.slowListen(this.spec);
  }
  toString() {
    return `listen with a hanging first resync(${describeSpec({ ...this.spec, outOfSync: true })})`;
  }
}

class Off extends Step {
  constructor(private readonly pick: number) {
    super();
  }
  private target(m: Readonly<Model>) {
    const runtime = m.subs.filter((sub) => sub.kind === 'runtime' && sub.removalStart === undefined && sub.off);
    return runtime[this.pick % Math.max(1, runtime.length)];
  }
  check(m: Readonly<Model>) {
    return this.target(m) !== undefined;
  }
  protected async act(h: Harness) {
    await h.off(this.target(h)!);
  }
  toString() {
    return `off(listener #${this.pick})`;
  }
}

class Unlisten extends Step {
  constructor(private readonly channel: number) {
    super();
  }
  check(m: Readonly<Model>) {
    return m.activeOn(this.channel).length > 0;
  }
  protected async act(h: Harness) {
    await h.unlisten(this.channel);
  }
  toString() {
    return `unlisten(${c(this.channel)})`;
  }
}

class Notify extends Step {
  constructor(
    private readonly channel: number,
    private readonly count: number,
  ) {
    super();
  }
  check() {
    return true;
  }
  protected async act(h: Harness) {
    h.note(this.toString());
    for (let i = 0; i < this.count; i++) {
      await h.send('notify', [this.channel], { how: 'notify' });
    }
  }
  toString() {
    return `notify(${c(this.channel)} x${this.count})`;
  }
}

class NotifyMany extends Step {
  constructor(private readonly channels: readonly number[]) {
    super();
  }
  check() {
    return true;
  }
  protected async act(h: Harness) {
    h.note(this.toString());
    await h.send('notifyMany', this.channels);
  }
  toString() {
    return `notifyMany(${this.channels.map(c).join(',')})`;
  }
}

class Transaction extends Step {
  constructor(
    private readonly channel: number,
    private readonly count: number,
    private readonly commit: boolean,
  ) {
    super();
  }
  check() {
    return true;
  }
  protected async act(h: Harness) {
    h.note(this.toString());
    const channels = Array.from({ length: this.count }, () => this.channel);
    await h.send(this.commit ? 'transaction' : 'rolled back', channels, { how: 'notify', commit: this.commit });
  }
  toString() {
    return `notify in a transaction(${c(this.channel)} x${this.count}, ${this.commit ? 'COMMIT' : 'ROLLBACK'})`;
  }
}

class Resync extends Step {
  constructor(private readonly channel: number) {
    super();
  }
  check(m: Readonly<Model>) {
    return m.activeOn(this.channel).length > 0;
  }
  protected async act(h: Harness) {
    await h.resync(this.channel);
  }
  toString() {
    return `resync(${c(this.channel)})`;
  }
}

type FaultKind = 'kill' | 'reset' | 'blackhole' | 'refuse';
const FAULTS: Record<FaultKind, string> = {
  kill: 'kill the LISTEN backend',
  reset: 'reset the connection',
  blackhole: 'blackhole the connection',
  refuse: 'reset and refuse connections a while',
};

class Fault extends Step {
  constructor(
    private readonly kind: FaultKind,
    private readonly whileDown: readonly number[],
    private readonly listen: RuntimeSpec | undefined,
  ) {
    super();
  }
  check() {
    return true;
  }
  protected async act(h: Harness) {
    const room = h.subs.filter((sub) => sub.kind !== 'sentinel' && sub.removalStart === undefined).length < MAX_SUBSCRIBERS;
    await h.fault(this.kind, this.whileDown, room ? this.listen : undefined);
  }
  toString() {
    const meanwhile = [
      ...(this.whileDown.length ? [`notify ${this.whileDown.map(c).join(',')}`] : []),
      ...(this.listen ? [`listen(${describeSpec(this.listen)})`] : []),
    ];
    return `${FAULTS[this.kind]}${meanwhile.length ? `, ${meanwhile.join(' and ')} while down` : ''}`; // (no listen when 8 are there)
  }
}

class Block extends Step {
  constructor(
    private readonly channel: number,
    private readonly pick: number,
  ) {
    super();
  }
  check(m: Readonly<Model>) {
    return blockable(m, this.channel).length > 0;
  }
  protected async act(h: Harness) {
    const subs = blockable(h, this.channel);
    await h.block(subs[this.pick % subs.length]!);
  }
  toString() {
    return `slow handler(${c(this.channel)}, subscriber #${this.pick})`;
  }
}

class Release extends Step {
  constructor(private readonly channel: number) {
    super();
  }
  check(m: Readonly<Model>) {
    return (
      m.gates.some((gate) => gate.channel === this.channel && !gate.released) ||
      m.subs.some((sub) => sub.channel === this.channel && sub.syncGate && !sub.syncGate.released)
    );
  }
  protected async act(h: Harness) {
    await h.release(this.channel);
  }
  toString() {
    return `release what hangs(${c(this.channel)})`;
  }
}

class Burst extends Step {
  constructor(
    private readonly channel: number,
    private readonly count: number,
  ) {
    super();
  }
  check(m: Readonly<Model>) {
    return m.held(this.channel);
  }
  protected async act(h: Harness) {
    h.note(this.toString());
    await h.send('burst', Array.from({ length: this.count }, () => this.channel));
  }
  toString() {
    return `burst(${c(this.channel)} x${this.count})`;
  }
}

/** Subscribers of the channel a slow handler can be given: in sync, and not hanging already. */
function blockable(m: Readonly<Model>, channel: number) {
  return m.activeOn(channel).filter((sub) => !m.pending(sub) && !m.blocked(sub));
}

/**
 * What made caches end older than the table: a subscriber's slow handler holds its queue while a
 * read waits behind it (a resync() or, after a loss, a reconnect's), a change queues behind the
 * handler, the connection is lost while all of that waits and a change commits meanwhile; then the
 * handler is released. The read must see the last change, and the queued one must not be applied
 * after it.
 */
class StaleRead extends Step {
  constructor(
    private readonly channel: number,
    private readonly pick: number,
    private readonly viaResync: boolean,
    private readonly kind: FaultKind,
  ) {
    super();
  }
  check(m: Readonly<Model>) {
    return blockable(m, this.channel).some((sub) => sub.outOfSync);
  }
  protected async act(h: Harness) {
    h.note(this.toString());
    const subs = blockable(h, this.channel).filter((sub) => sub.outOfSync);
    if (!(await h.block(subs[this.pick % subs.length]!))) return;
    await h.send('behind the slow handler', [this.channel], { how: 'notify' });
    if (this.viaResync) await h.resync(this.channel);
    await h.fault(this.kind, [this.channel]);
    await h.send('after the loss', [this.channel]);
    await h.release(this.channel);
  }
  toString() {
    return `stale read(${c(this.channel)}, subscriber #${this.pick}${this.viaResync ? ', resync()' : ''} waits behind a slow handler, ${FAULTS[this.kind]} meanwhile)`;
  }
}

const channel = fc.integer({ min: 0, max: CHANNELS - 1 });

const spec: fc.Arbitrary<DecoratedSpec> = fc
  // Mostly handlers that send during their resync: that is what shows whether the channel is held meanwhile.
  .record({ channel, outOfSync: fc.boolean(), async: fc.boolean(), sendsInSync: fc.nat(3).map((n) => n < 3) })
  .map((value) => Object.assign(value, { [fc.toStringMethod]: () => describeSpec(value) }));

/** The decorated providers of a run (present from app creation). */
export const decoratedProviders = fc.array(spec, { maxLength: 4 });

/**
 * The command sequences. `replayPath` (printed in a counterexample as `/*replayPath="..."*\/`),
 * with the seed and path, replays exactly the commands that ran in that counterexample.
 */
export function commandSequences(maxCommands: number, replayPath?: string) {
  return fc.commands(
    [
      spec.map((s) => new Listen(s)),
      spec.map((s) => new Listen(s)),
      spec.map((s) => new SlowListen(s)),
      fc.nat(7).map((pick) => new Off(pick)),
      channel.map((ch) => new Unlisten(ch)),
      fc.tuple(channel, fc.integer({ min: 1, max: 3 })).map(([ch, n]) => new Notify(ch, n)),
      fc.array(channel, { minLength: 1, maxLength: 6 }).map((channels) => new NotifyMany(channels)),
      fc.tuple(channel, fc.integer({ min: 1, max: 3 }), fc.boolean()).map(([ch, n, commit]) => new Transaction(ch, n, commit)),
      channel.map((ch) => new Resync(ch)),
      fc
        .tuple(
          fc.constantFrom<FaultKind>('kill', 'reset', 'blackhole', 'refuse'),
          fc.array(channel, { maxLength: 3 }),
          fc.option(spec, { nil: undefined, freq: 2 }),
        )
        .map(([kind, whileDown, listen]) => new Fault(kind, whileDown, listen)),
      fc.tuple(channel, fc.nat(7)).map(([ch, pick]) => new Block(ch, pick)),
      fc.tuple(channel, fc.nat(7)).map(([ch, pick]) => new Block(ch, pick)),
      channel.map((ch) => new Release(ch)),
      fc.tuple(channel, fc.integer({ min: 21, max: 30 })).map(([ch, n]) => new Burst(ch, n)),
      fc.tuple(channel, fc.integer({ min: 21, max: 30 })).map(([ch, n]) => new Burst(ch, n)),
      fc
        .tuple(channel, fc.nat(7), fc.boolean(), fc.constantFrom<FaultKind>('kill', 'reset', 'blackhole'))
        .map(([ch, pick, viaResync, kind]) => new StaleRead(ch, pick, viaResync, kind)),
    ],
    { maxCommands, size: 'max', replayPath },
  );
}
