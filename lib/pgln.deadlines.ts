/** Something in flight with a {@link Deadlines} entry; the fields are the list's. */
export interface Deadlined {
  /** `performance.now()` when it began. */
  startedAt: number;
  prev?: Deadlined;
  next?: Deadlined;
  /** Its first deadline (`ms - warnMs` after it began) has passed. */
  warned: boolean;
  /** `ms - warnMs` after it began, if it is still in flight. */
  onWarning(): void;
  /** `ms` after it began, if it is still in flight; it has left the list. */
  onExpiry(): void;
}

/**
 * Two deadlines for each of many calls in flight that all run for the same time, `ms`: a warning
 * `warnMs` before the end, and the end. They all expire in the order they began, so a list in that
 * order and one timer, for the earliest deadline, stand for a timer per call. Adding and removing
 * a call costs a clock read and a few pointers; a timer per call (setTimeout and clearTimeout)
 * cost several times that, more than anything else on notify's path.
 *
 * The timer is unref'd while nothing is in flight, so it never holds the process open on its own,
 * and cleared once nothing is in flight after {@link close}.
 * A call's deadline passes at most about a millisecond late, never early.
 */
export class Deadlines {
  private head?: Deadlined;
  private tail?: Deadlined;
  private timer?: NodeJS.Timeout;
  private refed = false;
  /** Shut down: the timer goes as soon as nothing is in flight, rather than waiting, unref'd. */
  private closed = false;

  constructor(
    private readonly ms: number,
    /** How long before the end the warning comes; at most half of `ms`. */
    private readonly warnMs: number,
  ) {}

  add(call: Deadlined): void {
    call.startedAt = performance.now();
    call.warned = false;
    call.next = undefined;
    call.prev = this.tail;
    if (this.tail) this.tail.next = call;
    else this.head = call;
    this.tail = call;
    // A timer already there fires no later than this call's warning: it was set for a deadline of
    // an earlier call, which comes no later (warnMs is at most half of ms).
    if (!this.timer) this.arm(this.ms - this.warnMs);
    else if (!this.refed) {
      this.timer.ref();
      this.refed = true;
    }
  }

  /** Takes a call out of the list (done, or expired); harmless when it is not in it. */
  remove(call: Deadlined): void {
    const { prev, next } = call;
    if (!prev && this.head !== call) return;
    if (prev) prev.next = next;
    else this.head = next;
    if (next) next.prev = prev;
    else this.tail = prev;
    call.prev = call.next = undefined;
    if (!this.head) this.idle();
  }

  /** At shutdown: what is in flight keeps its deadlines, and no timer is left once it is done. */
  close(): void {
    this.closed = true;
    if (!this.head) this.idle();
  }

  /** Nothing in flight: the timer no longer holds the process open (or is gone, once closed). */
  private idle(): void {
    if (!this.timer) return;
    if (this.closed) {
      clearTimeout(this.timer);
      this.timer = undefined;
    } else if (this.refed) this.timer.unref();
    this.refed = false;
  }

  private arm(ms: number): void {
    this.timer = setTimeout(this.fire, Math.max(1, Math.ceil(ms)));
    this.refed = true;
  }

  private readonly fire = (): void => {
    this.timer = undefined;
    this.refed = false;
    // A timer may fire up to a millisecond before the clock says, by its rounding.
    const now = performance.now() + 1;
    // Ended: always at the head, in the order they began. Each leaves the list before it is told.
    while (this.head && this.head.startedAt + this.ms <= now) {
      const call = this.head;
      this.remove(call);
      call.onExpiry();
    }
    // Past their warning: a prefix of what is left.
    const warnAt = this.ms - this.warnMs;
    let call = this.head;
    while (call && call.startedAt + warnAt <= now) {
      if (!call.warned) {
        call.warned = true;
        call.onWarning();
      }
      call = call.next;
    }
    // One set meanwhile, by a call added from a callback, may be set for too late.
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (!this.head) return;
    const next = Math.min(this.head.startedAt + this.ms, call ? call.startedAt + warnAt : Infinity);
    this.arm(next - performance.now());
  };
}
