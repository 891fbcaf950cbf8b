import { PglnPayloadLostError } from '../errors/index.js';
import type { PglnNotification } from '../interfaces/index.js';
import { describeError } from '../pgln.connection-errors.js';
import { LARGE_PAYLOAD_LOST } from '../pgln.messages.js';

/** A notification that arrived, at its position, and whether it can go on: its payload fetched, or lost. */
interface Arrival {
  notification: PglnNotification;
  readonly position: number;
  /** Waiting for its payload; then ready, or lost (the reference and why). */
  outcome: 'fetching' | 'ready' | { readonly reference: string; readonly cause: unknown };
}

/** Where arrivals go once they can, in order. */
export interface ArrivalSink {
  deliver(notification: PglnNotification, position: number): void;
  /** Notifications up to `position` whose payloads are lost, in a row: one error says so for all. */
  lost(position: number, error: PglnPayloadLostError): void;
}

/**
 * The notifications of one channel that wait between the connection and the subscribers because a
 * large payload (`largePayloads`) is being fetched: the one with the reference, and every one that
 * arrived after it, so that subscribers get the channel's notifications in arrival order.
 *
 * A notification's position is the one it got when it arrived, not when it goes on: a read that
 * began meanwhile covers it (every notification that had arrived was committed before the read
 * began), and a subscriber skips what its read covers. So a fetch that outlives the connection the
 * notification came on never delivers it after the next connection's read.
 */
export class Arrivals {
  private items: Arrival[] = [];
  private head = 0;

  constructor(
    private readonly channel: string,
    private readonly sink: ArrivalSink,
  ) {}

  /** Notifications waiting. */
  get length(): number {
    return this.items.length - this.head;
  }

  /** A notification arrived at `position`; `fetch`: its reference and the fetch of its payload, if it carries one. */
  add(notification: PglnNotification, position: number, fetch?: { reference: string; payload: Promise<string> }): void {
    const arrival: Arrival = { notification, position, outcome: fetch ? 'fetching' : 'ready' };
    this.items.push(arrival);
    if (!fetch) return;
    fetch.payload.then(
      (payload) => {
        const { channel, processId } = notification;
        arrival.notification = { channel, payload, processId };
        arrival.outcome = 'ready';
        this.release();
      },
      (cause: unknown) => {
        arrival.outcome = { reference: fetch.reference, cause };
        this.release();
      },
    );
  }

  /**
   * Drops every waiting notification (the channel closed, or too many wait); resolves with the
   * position of the last one, or undefined when none waited. A fetch still running is ignored.
   */
  clear(): number | undefined {
    const last = this.length > 0 ? this.items[this.items.length - 1]!.position : undefined;
    this.items = [];
    this.head = 0;
    return last;
  }

  /**
   * Passes on, in order, what no longer waits for a fetch. Losses in a row go as one, once the
   * notification after them is settled too (the references of one fetch fail one after the other).
   */
  private release(): void {
    const { items } = this;
    while (this.head < items.length) {
      const arrival = items[this.head]!;
      const { outcome } = arrival;
      if (outcome === 'fetching') return;
      if (outcome === 'ready') {
        this.head++;
        this.sink.deliver(arrival.notification, arrival.position);
        continue;
      }
      let end = this.head + 1;
      while (end < items.length && typeof items[end]!.outcome === 'object') end++;
      if (end < items.length && items[end]!.outcome === 'fetching') return;
      const count = end - this.head;
      this.head = end;
      const message = LARGE_PAYLOAD_LOST(this.channel, count, outcome.reference, describeError(outcome.cause));
      this.sink.lost(items[end - 1]!.position, new PglnPayloadLostError(message, this.channel, outcome.reference, count, { cause: outcome.cause }));
    }
    this.clear();
  }
}
