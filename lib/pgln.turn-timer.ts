import { preview } from './pgln.messages.js';

/**
 * Times synchronous handlers per read of notifications from the socket, not per call: a clock
 * read when pg hands over the first notification of a read and one, in a microtask, once the
 * read's synchronous deliveries are done. A synchronous handler blocks the event loop within
 * that span; reading the clock around every call would cost more than the rest of the delivery
 * (two reads are about 80 ns on a virtual machine). Handlers run later, from the queue behind an
 * async one, are not timed this way; the watchdog covers async handlers.
 */
export class TurnTimer {
  private open = false;
  private startedAt = 0;
  private last?: string;
  /** The handlers run in this read (at most 5), and their channels: described only if reported. */
  private readonly ran: string[] = [];
  private readonly on: string[] = [];

  constructor(
    private readonly thresholdMs: number,
    /** Told about a turn that took `thresholdMs` or longer, with the handlers it ran. */
    private readonly report: (elapsedMs: number, handlers: string[]) => void,
  ) {}

  /** A notification arrived from the socket: starts timing, unless this read is timed already. */
  begin(): void {
    if (this.open) return;
    this.open = true;
    this.startedAt = Date.now();
    queueMicrotask(this.close);
  }

  /** Notes that the handler `name` is about to run on `channel`, for the report. */
  note(name: string, channel: string): void {
    if (this.open && name !== this.last) {
      this.last = name;
      if (this.ran.length < 5) {
        this.ran.push(name);
        this.on.push(channel);
      }
    }
  }

  private readonly close = (): void => {
    const elapsed = Date.now() - this.startedAt;
    if (elapsed >= this.thresholdMs) {
      const handlers = this.ran.map((name, i) => `${name} on channel ${preview(this.on[i]!)}`);
      this.report(elapsed, [...new Set(handlers)]);
    }
    this.open = false;
    this.last = undefined;
    this.ran.length = 0;
    this.on.length = 0;
  };
}
