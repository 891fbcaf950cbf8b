import type { PglnNotification } from '../interfaces/index.js';

/**
 * A subscriber's notifications waiting to be delivered, in arrival order, each with its position on
 * the channel (see {@link SyncState}). Arrays with a moving head: pushing and shifting cost O(1),
 * and the consumed part is cut off now and then.
 */
export class DeliveryQueue {
  private items: (PglnNotification | undefined)[] = [];
  private positions: number[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  /** The position of the next notification; only meaningful when {@link length} > 0. */
  get nextPosition(): number {
    return this.positions[this.head]!;
  }

  push(notification: PglnNotification, position: number): void {
    this.items.push(notification);
    this.positions.push(position);
  }

  /** Takes the next notification off the queue (check {@link length} first). */
  shift(): PglnNotification {
    const item = this.items[this.head]!;
    this.items[this.head++] = undefined;
    if (this.head === this.items.length) {
      this.clear();
    } else if (this.head >= 1024 && this.head * 2 >= this.items.length) {
      this.items.splice(0, this.head);
      this.positions.splice(0, this.head);
      this.head = 0;
    }
    return item;
  }

  /** Drops the notifications at or before `position`; returns how many there were. */
  dropUpTo(position: number): number {
    let dropped = 0;
    while (this.length > 0 && this.nextPosition <= position) {
      this.shift();
      dropped++;
    }
    return dropped;
  }

  /** Drops everything; returns how many there were. */
  clear(): number {
    const dropped = this.length;
    this.items.length = 0;
    this.positions.length = 0;
    this.head = 0;
    return dropped;
  }
}
