import type { OutOfSyncReason } from './pgln-notification.interface.js';

/**
 * What `PglnService.observe()` emits: first an out-of-sync event once the subscription is in sync
 * (LISTEN active: refetch now, and apply the notifications that follow), then one per
 * notification, and an out-of-sync event again after every resync (a reconnect, `resync()`).
 */
export type PglnChannelEvent<TPayload = string> =
  | {
      readonly type: 'out-of-sync';
      /** Why: `'listen'` first, then `'reconnect'`, `'manual'`, or `'overflow'`. */
      readonly reason: OutOfSyncReason;
    }
  | {
      readonly type: 'notification';
      /** The payload: the raw text for a channel given by name, the parsed (and validated) value for a definition. */
      readonly payload: TPayload;
      /** PID of the backend that sent it. */
      readonly processId: number;
    };
