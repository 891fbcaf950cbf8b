import { PglnError } from '../../../lib/index.js';
import type { Harness, Sent, Sub } from './harness.js';

/** One subscriber's queue overflowed, seen through the module's log line. */
export interface Overflow {
  tick: number;
  channel: number;
  gen: number;
  /** Its out-of-sync handler was queued (else: the count was reported to it). */
  resync: boolean;
  /** Which subscribers it may have been: a decorated provider is named; the listen()s of a channel share a name. */
  candidates: Sub[];
}

/** A resync() call of the test, and how it settled. */
export interface PendingResync {
  channel: number;
  gen: number;
  call: number;
  /** Tick and outcome once settled. */
  settled?: { tick: number; error?: unknown };
  /** Subscribers with an out-of-sync handler on the channel when called. */
  subs: Sub[];
}

/**
 * The model test's invariants, derived from the README's "Guarantees" and "API", each as weak as
 * it can be while still catching a hold that lets notifications through during a resync, a skipped
 * resync, a notification delivered twice, and one delivered after a read that saw it:
 *
 * 1. Order: per subscriber, none twice, none rolled back, none of another channel, and never a
 *    notification after one that was sent after it had been acknowledged (PostgreSQL delivers in
 *    commit order, and the module per subscriber in that order, across reconnects); one
 *    transaction's in their order.
 * 2. Hold: a subscriber's notification handler never runs while its own out-of-sync handler runs.
 * 3. Removal: no handler starts once off()/unlisten() (or app.close()) resolved.
 * 4. Completeness: a notification sent on its channel after the subscriber was in sync reaches it,
 *    unless a read of its own may have seen it (then it is delivered before that read or not at
 *    all; on the exactly-once channel, skipped by the read's snapshot: convergence, 8, checks that
 *    the read did see it), it may have committed while no LISTEN connection was up, or (without an
 *    out-of-sync handler) an overflow of its queue came after it was sent.
 * 5. Reconnect: after every loss, each subscriber with an out-of-sync handler that was there
 *    before runs it with reason 'reconnect' between the loss and the next 'live'.
 * 6. Overflow: the subscriber whose queue overflowed runs its out-of-sync handler afterwards (once
 *    its own slow handler let it), or, without one, is told (onError, or the log line that names it).
 * 7. listen() resolves after its onOutOfSync completed with reason 'listen'; app.init() after every
 *    decorated one completed with reason 'connect'; resync() after every out-of-sync handler of
 *    the channel ran again (it rejects only when the channel went away).
 * 8. Convergence (checked by the harness at every settle): the copy of every subscriber with an
 *    out-of-sync handler that nothing holds equals the table, row by row. A reload never reads an
 *    older version of a row than its subscriber had seen; on the exactly-once channel, no change is
 *    ever applied once its subscriber has seen that version or a newer one (the reload's snapshot
 *    skips what it read).
 * Plus, per command and at the end: the state returns to 'live' after every fault, stats().queued
 * is 0 once everything settled, no unhandled rejection, and after app.close() no timer and no
 * socket through the proxy.
 */
/**
 * Whether a read of an out-of-sync run may have seen the change of `n`: it read the table (its
 * snapshot taken) between its `read` and `end` ticks, and `n` committed between its send's ticks,
 * so it may have if `n` was sent before the run ended.
 */
export function mayHaveRead(sync: Sub['syncs'][number], n: Sent): boolean {
  return sync.read !== undefined && n.sendStart < (sync.end ?? Infinity);
}

export class Invariants {
  constructor(private readonly h: Harness) {}

  /** Every invariant over the whole timeline; `markers`: the channels just settled, with the marker each subscriber of theirs received. */
  check(markers: Map<number, Sent>): void {
    const windows = this.windows();
    for (const sub of this.h.subs) {
      this.checkOrder(sub);
      this.checkNoOverlap(sub);
      this.checkRemoval(sub);
    }
    for (const [channel, marker] of markers) {
      for (const sub of this.h.activeOn(channel)) {
        if (!this.h.pending(sub) && !this.h.blocked(sub)) this.checkComplete(sub, marker, windows);
      }
    }
    this.checkResyncAfterReconnect(windows);
    this.checkOverflows();
    this.checkResyncCalls();
  }

  /** A resync() may still wait while a subscriber of its channel hangs (a slow handler, a first resync). */
  mayWait(call: PendingResync): boolean {
    return this.h.gens[call.channel] === call.gen && this.h.held(call.channel);
  }

  /** Disconnects: from the last checkpoint before the loss to the next LISTEN ('syncing'). */
  private windows(): { start: number; loss: number; end: number; live: number }[] {
    const { states, checkpoints } = this.h;
    const windows: { start: number; loss: number; end: number; live: number }[] = [];
    for (const event of states) {
      if (event.state !== 'reconnecting') continue;
      const start = Math.max(...checkpoints.filter((tick) => tick < event.tick));
      const end = states.find((s) => s.state === 'syncing' && s.tick > event.tick)?.tick ?? Infinity;
      const live = states.find((s) => s.state === 'live' && s.tick > event.tick)?.tick ?? Infinity;
      windows.push({ start, loss: event.tick, end, live });
    }
    return windows;
  }

  /** In send order, none twice, none rolled back, none of another channel. */
  private checkOrder(sub: Sub): void {
    const { h } = this;
    const seen = new Set<number>();
    let latest: Sent | undefined;
    const lastIndex = new Map<number, number>();
    for (const { seq } of sub.deliveries) {
      const n = h.sent.get(seq);
      if (!n) return h.fail(`${sub.label} received a payload the test never sent: ${seq}`, sub);
      if (n.channel !== sub.channel) h.fail(`${sub.label} (on ${h.channelLabel(sub.channel)}) received ${seq}, sent on ${h.channelLabel(n.channel)}`, sub);
      if (n.committed === 'no') h.fail(`${sub.label} received ${seq}, whose transaction rolled back`, sub);
      if (seen.has(seq)) h.fail(`${sub.label} received ${seq} twice`, sub);
      seen.add(seq);
      if (latest && n.sendEnd < latest.sendStart) {
        h.fail(`${sub.label} received ${seq} after ${latest.seq}, though ${seq} was sent (and acknowledged) before ${latest.seq} was sent`, sub);
      }
      const index = lastIndex.get(n.batch);
      if (index !== undefined && n.index < index) h.fail(`${sub.label} received ${seq} after a later notification of the same transaction`, sub);
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
          this.h.fail(`${sub.label}'s notification handler ran (${delivery.seq}, ticks ${delivery.start}-${delivery.end ?? '…'}) while its out-of-sync handler ran (${sync.reason}, ticks ${sync.start}-${sync.end ?? '…'})`, sub);
        }
      }
    }
  }

  /** No handler called once off()/unlisten() resolved, nor after app.close() resolved. */
  private checkRemoval(sub: Sub): void {
    const after = Math.min(sub.removedAt ?? Infinity, this.h.closedAt ?? Infinity);
    const late = sub.deliveries.find((d) => d.start > after) ?? sub.syncs.find((s) => s.start > after);
    if (late) this.h.fail(`${sub.label}'s handler was called at tick ${late.start}, after its removal (or close) resolved at ${after}`, sub);
  }

  /** See 4 above, up to the subscriber's latest marker. */
  private checkComplete(sub: Sub, marker: Sent, windows: { start: number; end: number }[]): void {
    if (sub.coverageStart === undefined) return;
    const { h } = this;
    const delivered = new Set(sub.deliveries.map((d) => d.seq));
    const overflows = sub.outOfSync ? [] : h.overflows.filter((o) => o.candidates.includes(sub)).map((o) => o.tick);
    for (const n of h.sent.values()) {
      if (n.channel !== sub.channel || n.committed !== 'yes' || delivered.has(n.seq)) continue;
      if (n.sendStart <= sub.coverageStart || n.sendEnd >= marker.sendStart) continue;
      if (sub.syncs.some((sync) => mayHaveRead(sync, n))) continue;
      if (windows.some((w) => n.sendEnd > w.start && n.sendStart < w.end)) continue;
      if (overflows.some((tick) => tick > n.sendStart)) continue;
      h.fail(
        `${sub.label} never received ${n.seq} (${n.origin}, committed at ticks ${n.sendStart}-${n.sendEnd} while it was in sync and connected, ` +
          `no read of its own began after it, no overflow), though it received the later marker ${marker.seq}`,
        sub,
      );
    }
  }

  /** After every reconnect, each subscriber with an out-of-sync handler that was there before resyncs (reason 'reconnect') before 'live'. */
  private checkResyncAfterReconnect(windows: { loss: number; live: number }[]): void {
    for (const { loss, live } of windows) {
      for (const sub of this.h.subs) {
        if (!sub.outOfSync || sub.coverageStart === undefined || sub.coverageStart > loss) continue;
        // A listen() whose first resync ran at the loss runs it again before it resolves.
        const settled = sub.kind === 'runtime' ? (sub.listenSettled?.tick ?? Infinity) : 0;
        const by = settled > loss ? Math.max(live, settled) : live;
        if (by === Infinity) continue;
        if (sub.removalStart !== undefined && sub.removalStart < by) continue;
        if (!sub.syncs.some((s) => s.start > loss && s.start < by && s.reason === 'reconnect')) {
          this.h.fail(`${sub.label} has an out-of-sync handler, but it did not run with reason 'reconnect' between the loss (tick ${loss}) and ${by === live ? `'live' (tick ${live})` : `its listen() resolving (tick ${by})`}`, sub);
        }
      }
    }
  }

  /** See 6 above. */
  private checkOverflows(): void {
    const { h } = this;
    for (const overflow of h.overflows) {
      if (overflow.candidates.length === 0) h.fail(`the overflow on ${h.channelLabel(overflow.channel)} at tick ${overflow.tick} names no subscriber of it`);
      const settled = (sub: Sub) => sub.removalStart !== undefined || h.blocked(sub) || h.hanging(sub);
      if (overflow.resync) {
        const resynced = (sub: Sub) => settled(sub) || sub.syncs.some((s) => s.start > overflow.tick);
        if (!overflow.candidates.some(resynced)) {
          h.fail(`${overflow.candidates.map((sub) => sub.label).join(' or ')} did not run its out-of-sync handler after the overflow of its queue at tick ${overflow.tick}`, overflow.candidates[0]);
        }
      } else {
        // The log line names a decorated provider: that is its report. A listen() is told through onError.
        const told = (sub: Sub) => sub.kind !== 'runtime' || sub.reports.some((tick) => tick > overflow.tick);
        if (!overflow.candidates.some(told)) h.fail(`${overflow.candidates.map((sub) => sub.label).join(' or ')} was not told of the overflow of its queue at tick ${overflow.tick}`, overflow.candidates[0]);
      }
    }
  }

  /** resync() resolves after every out-of-sync handler of the channel ran (started after the call); it rejects only if the channel went away. */
  private checkResyncCalls(): void {
    const { h } = this;
    for (const call of h.pendingResyncs) {
      const gone = h.gens[call.channel] !== call.gen;
      if (!call.settled) {
        if (!this.mayWait(call)) h.fail(`resync(${h.channelLabel(call.channel)}) called at tick ${call.call} has not settled, though its channel ${gone ? 'was dropped' : 'flows'}`);
        continue;
      }
      if (call.settled.error !== undefined) {
        if (!gone || !(call.settled.error instanceof PglnError)) h.fail(`resync(${h.channelLabel(call.channel)}) rejected: ${String(call.settled.error)}`);
        continue;
      }
      const droppedBefore = h.subs.some((sub) => sub.channel === call.channel && sub.gen === call.gen && sub.removedAt !== undefined && sub.removedAt < call.settled!.tick && sub.removalStart! > call.call);
      if (gone && droppedBefore && !call.subs.some((sub) => sub.syncs.some((s) => s.start > call.call))) {
        h.fail(`resync(${h.channelLabel(call.channel)}) resolved (tick ${call.settled.tick}) though its channel was unlistened before any out-of-sync handler ran for it`);
      }
      for (const sub of call.subs) {
        if (sub.removalStart !== undefined && sub.removalStart < call.settled.tick) continue;
        if (!sub.syncs.some((s) => s.start > call.call && s.end !== undefined && s.end < call.settled!.tick)) {
          h.fail(`resync(${h.channelLabel(call.channel)}) resolved at tick ${call.settled.tick} without ${sub.label}'s out-of-sync handler having run since the call (tick ${call.call})`, sub);
        }
      }
    }
  }
}
