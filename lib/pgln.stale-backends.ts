import type { Logger } from '@nestjs/common';
import { keepsConnection } from './pgln.connection.js';
import { describeError } from './pgln.connection-errors.js';
import { PREVIOUS_TERMINATED, TERMINATE_FAILED } from './pgln.messages.js';
import type { BackendIdentity } from './pgln.session.js';
import type { Session } from './pgln.transport.js';

/** Most backends of lost sessions kept for termination (a connection that keeps failing makes one each time). */
const MAX_REMEMBERED_BACKENDS = 32;

/**
 * The backends of lost LISTEN sessions, terminated once a new session is live if they are still
 * there: after a half-open connection is replaced, its backend LISTENs on for minutes without
 * reading, and PostgreSQL cannot truncate its notification queue past it. Only the exact backends
 * are touched (see {@link BackendIdentity}).
 */
export class StaleBackends {
  private backends: BackendIdentity[] = [];
  /** Terminating them failed once: a permission error is logged once, not fatal. */
  private refused = false;

  constructor(private readonly logger: Logger) {}

  /** A session was lost: its backend may live on. */
  remember(identity: BackendIdentity | undefined): void {
    if (identity) this.add([identity]);
  }

  /** Terminates the remembered backends still there, from `session`; if the session fails meanwhile, the next one tries again. */
  async terminate(session: Session): Promise<void> {
    const backends = this.backends.splice(0);
    if (backends.length === 0) return;
    try {
      const terminated = await session.terminate(backends);
      if (terminated.length > 0) this.logger.warn(PREVIOUS_TERMINATED(terminated));
    } catch (error) {
      if (keepsConnection(error)) {
        // The server refused (a role without pg_signal_backend, say); a FATAL means our session ended.
        if (!this.refused) this.logger.warn(TERMINATE_FAILED(describeError(error)));
        this.refused = true;
      } else {
        this.add(backends);
      }
    }
  }

  /** Keeps backends to terminate later, the newest ones if there are very many. */
  private add(backends: readonly BackendIdentity[]): void {
    this.backends = [...this.backends, ...backends].slice(-MAX_REMEMBERED_BACKENDS);
  }
}
