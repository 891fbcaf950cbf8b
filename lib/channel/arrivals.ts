import { PglnPayloadLostError } from '../errors/index.js';
import type { PglnNotification } from '../interfaces/index.js';
import { describeError } from '../pgln.connection-errors.js';
import { LARGE_PAYLOAD_LOST } from '../pgln.messages.js';

/** A notification that arrived, at its position, and whether it can go on: its payload fetched, or lost. */
interface Arrival {
  notification: PglnNotification;
  readonly position: number;
  /** Waiting for its payload; then ready, or lost with the error to report. */
  outcome: 'fetching' | 'ready' | PglnPayloadLostError;
}

/** Where arrivals go once they can, in order. */
export interface ArrivalSink {
  deliver(notification: PglnNotification, position: number): void;
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
  private closed = false;

  constructor(
    private readonly channel: string,
    private readonly sink: ArrivalSink,
  ) {}

  /** Notifications waiting. */
  get length(): number {
    return this.items.length - this.head;
  }

  /**
   * A notification arrived at `position`; `payload`: the fetch of its large payload, if it carries
   * a reference (`reference`).
   */
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
      (error: unknown) => {
        const message = LARGE_PAYLOAD_LOST(this.channel, fetch.reference, describeError(error));
        arrival.outcome = new PglnPayloadLostError(message, this.channel, fetch.reference, { cause: error });
        this.release();
      },
    );
  }

  /** Drops every waiting notification (the channel is closed). */
  close(): void {
    this.closed = true;
    this.items = [];
    this.head = 0;
  }

  /** Passes on, in order, what no longer waits for a fetch. */
  private release(): void {
    while (!this.closed && this.head < this.items.length) {
      const arrival = this.items[this.head]!;
      if (arrival.outcome === 'fetching') return;
      this.items[this.head++] = undefined as never;
      if (arrival.outcome === 'ready') this.sink.deliver(arrival.notification, arrival.position);
      else this.sink.lost(arrival.position, arrival.outcome);
    }
    if (this.head === this.items.length) {
      this.items = [];
      this.head = 0;
    }
  }
}
