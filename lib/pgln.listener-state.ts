import type { Logger } from '@nestjs/common';
import { BehaviorSubject, type Observable } from 'rxjs';
import type { PglnState, PglnStateChange } from './interfaces/index.js';

/**
 * The listener's one state value and its history: `idle -> connecting -> syncing -> live ->
 * reconnecting -> ... -> closed`. Every transition is published on {@link changes} and logged
 * (`reconnecting` as a warning); `closed` is final.
 */
export class ListenerState {
  /** When the listener stopped being live (or was created); undefined while live. */
  notLiveSince?: Date = new Date();
  private readonly states = new BehaviorSubject<PglnStateChange>({ state: 'idle', previous: 'idle', detail: 'created', at: new Date() });

  constructor(private readonly logger: Logger) {}

  get value(): PglnState {
    return this.states.value.state;
  }

  /** Since when it is in its state. */
  get since(): Date {
    return this.states.value.at;
  }

  /** The current state, then every transition; completes after `'closed'`. */
  get changes(): Observable<PglnStateChange> {
    return this.states.asObservable();
  }

  /** Moves to `next` (nothing when already there, or closed), saying why. */
  transition(next: PglnState, detail: string): void {
    const previous = this.value;
    if (previous === next || previous === 'closed') return;
    const at = new Date();
    if (next === 'live') this.notLiveSince = undefined;
    else this.notLiveSince ??= at;
    this.states.next({ state: next, previous, detail, at });
    const line = `${previous} -> ${next}: ${detail}`;
    if (next === 'reconnecting') this.logger.warn(line);
    else this.logger.log(line);
  }

  /** Completes {@link changes} (after `'closed'`). */
  complete(): void {
    this.states.complete();
  }
}
