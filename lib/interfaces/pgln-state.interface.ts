/**
 * The listener's connection state:
 * - `'idle'`: created, not started yet;
 * - `'connecting'`: opening the first LISTEN connection;
 * - `'syncing'`: connected and listening; out-of-sync handlers are running, their channels held;
 * - `'live'`: every channel is in sync and notifications flow;
 * - `'reconnecting'`: the connection was lost; waiting for the next attempt or connecting;
 * - `'closed'`: shut down for good.
 */
export type PglnState = 'idle' | 'connecting' | 'syncing' | 'live' | 'reconnecting' | 'closed';

/** One transition of the listener's state, as `PglnService.state$` emits it. */
export interface PglnStateChange {
  /** The state entered. */
  readonly state: PglnState;
  /** The state left (equal to `state` for the first emission, which reports the current state). */
  readonly previous: PglnState;
  /** Why, in words (the same text as the log line). */
  readonly detail: string;
  readonly at: Date;
}
