import type { OutOfSyncReason } from '../interfaces/index.js';
import type { Snapshot } from './snapshot.js';

/**
 * Where a subscriber stands with the database: one value, each phase with what it needs.
 *
 * Two numbers say which read and which notifications belong together:
 * - a **position** numbers the notifications of a channel in the order they arrived (1, 2, 3, ...);
 *   a read **covers up to** the position at which it began: every notification up to there was
 *   committed before it began, so the read saw its effect;
 * - an **epoch** numbers the LISTENs: each connection's LISTEN of the channel. A read follows one
 *   (it began after that LISTEN ran); a read that follows an older epoch than the channel's current
 *   one may have missed what was committed while no connection listened.
 *
 * The rule every phase keeps: a notification at or before the position a subscriber's latest read
 * covers is never delivered after that read (it would take the state back to before the read). It
 * is delivered before the read began, or not at all.
 */
export type SyncState =
  /**
   * A read is due: the first, or one after a lost connection, an overflow or `resync()`. `epoch`: the
   * LISTEN its last read followed (none before the first), so that a newer connection's LISTEN tells
   * it `'reconnect'`.
   */
  | { readonly kind: 'due'; readonly reason: OutOfSyncReason; readonly epoch?: number }
  /**
   * The out-of-sync handlers run, after the LISTEN of `epoch`, covering up to `upTo`. `again`: a
   * newer cause came meanwhile (the connection was lost, the queue overflowed, `resync()`), so it
   * reads once more when done. `snapshot`: what the current attempt recorded.
   */
  | {
      readonly kind: 'reading';
      readonly reason: OutOfSyncReason;
      readonly epoch: number;
      readonly upTo: number;
      again?: OutOfSyncReason;
      snapshot?: Snapshot;
    }
  /**
   * In sync: its handlers' state is that of its last read (after the LISTEN of `epoch`, covering up
   * to `upTo`) plus the notifications delivered since. While `snapshot` is set, a notification whose
   * transaction that read already saw is skipped; the first one it did not see clears it.
   */
  | { readonly kind: 'live'; readonly epoch: number; readonly upTo: number; snapshot?: Snapshot }
  /** Removed (`unlisten()`, the function `listen()` returned, shutdown): none of its handlers is called again. */
  | { readonly kind: 'removed' };

/**
 * Of two causes that one read answers, the one to tell the handler: a lost connection is what it
 * most needs to know; otherwise the earlier cause stands.
 */
export function merge(current: OutOfSyncReason | undefined, next: OutOfSyncReason): OutOfSyncReason {
  return next === 'reconnect' ? next : (current ?? next);
}
