import type { Session } from './pgln.transport.js';

/**
 * One idle, connected and authenticated LISTEN session kept beside the live one
 * (`listener: { spare: true }`): when the live session is lost, the listener LISTENs on the spare at
 * once instead of connecting anew (a TCP and TLS handshake, authentication, the host check), and
 * a new spare is opened in the background. The spare is checked every `checkEveryMs` with a round
 * trip, bounded by the session's timeout, so that one that died unnoticed (a half-open socket) is
 * replaced before it is needed; one that fails anyway when used is given up at once for a fresh
 * connection (see `PglnListener`).
 */
export class Spare {
  /** The spare: connecting, or connected once `ready`. */
  private session?: Session;
  private ready = false;
  /** The next check of the ready spare. */
  private checkTimer?: NodeJS.Timeout;
  /** The next attempt after a spare was lost. */
  private refillTimer?: NodeJS.Timeout;
  private stopped = false;

  constructor(
    /** A new session, not connected yet (its loss is reported to {@link lost} by the listener). */
    private readonly open: () => Session,
    private readonly checkEveryMs: number,
  ) {}

  /** Opens a spare if there is none (the listener just went live). */
  fill(): void {
    if (this.stopped || this.session) return;
    const session = this.open();
    this.session = session;
    this.ready = false;
    session.connect().then(
      () => {
        if (this.session !== session) return session.destroy();
        this.ready = true;
        this.check(session);
      },
      () => this.lost(session),
    );
  }

  /** The ready spare, if any, handed over for good: the listener LISTENs on it; the next one opens once it is live again. */
  take(): Session | undefined {
    if (!this.ready || !this.session) return undefined;
    const { session } = this;
    this.session = undefined;
    this.ready = false;
    clearTimeout(this.checkTimer);
    return session;
  }

  /**
   * A session was lost: if it is the spare, it is forgotten (a new one opens after `checkEveryMs`,
   * not at once: a server that drops every connection gets no loop) and this returns true.
   */
  lost(session: Session): boolean {
    if (session !== this.session) return false;
    session.destroy();
    this.session = undefined;
    this.ready = false;
    clearTimeout(this.checkTimer);
    clearTimeout(this.refillTimer);
    if (!this.stopped) this.refillTimer = setTimeout(() => this.fill(), this.checkEveryMs);
    return true;
  }

  /** Closes the spare and opens none any more (shutdown). */
  async close(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.checkTimer);
    clearTimeout(this.refillTimer);
    const { session } = this;
    this.session = undefined;
    await session?.close();
  }

  /** Asks the spare for a round trip every `checkEveryMs`: no answer in time, and the session reports itself lost. */
  private check(session: Session): void {
    this.checkTimer = setTimeout(() => {
      if (this.stopped || this.session !== session) return;
      session.health().then(
        () => !this.stopped && this.session === session && this.check(session),
        () => this.lost(session),
      );
    }, this.checkEveryMs);
  }
}
