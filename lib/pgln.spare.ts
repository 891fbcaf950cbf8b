import type { Session } from './pgln.transport.js';

/** The least time a spare is given to answer its LISTEN when it takes over, whatever its round trips measured. */
const ANSWER_FLOOR_MS = 100;
/** How many of its round trips a spare is given to answer its LISTEN when it takes over. */
const ANSWER_ROUND_TRIPS = 4;

/** A spare handed over, and how long it may take to answer its LISTEN before it counts as dead. */
export interface TakenSpare {
  readonly session: Session;
  readonly answerWithinMs: number;
}

/**
 * One idle, connected and authenticated LISTEN session kept beside the live one
 * (`listener: { spare: true }`): when the live session is lost, the listener LISTENs on the spare at
 * once instead of connecting anew (a TCP and TLS handshake, authentication, the host check), and
 * a new spare is opened in the background. The spare is checked every `checkEveryMs` with a round
 * trip, bounded by the session's timeout, so that one that died unnoticed (a half-open socket) is
 * replaced before it is needed. One that died since cannot hold recovery up: handed over, it is
 * given a few of its measured round trips to answer (see {@link TakenSpare}), and one that fails
 * or does not answer in that time is given up for a fresh connection (see `PglnListener`).
 */
export class Spare {
  /** The spare: connecting, or connected once `ready`. */
  private session?: Session;
  private ready = false;
  /** The spare's last measured round trip (its health check's; its connecting's, which took several, before the first). */
  private roundTripMs = 0;
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
    const startedAt = Date.now();
    session.connect().then(
      () => {
        if (this.session !== session) return session.destroy();
        this.roundTripMs = Date.now() - startedAt;
        this.ready = true;
        this.check(session);
      },
      () => this.lost(session),
    );
  }

  /**
   * The ready spare, if any, handed over for good: the listener LISTENs on it, giving it at most
   * `timeoutMs` to answer, less when its round trips were short; the next spare opens once the
   * listener is live again.
   */
  take(timeoutMs: number): TakenSpare | undefined {
    if (!this.ready || !this.session) return undefined;
    const { session } = this;
    this.session = undefined;
    this.ready = false;
    clearTimeout(this.checkTimer);
    const answerWithinMs = Math.min(timeoutMs, Math.max(ANSWER_FLOOR_MS, ANSWER_ROUND_TRIPS * this.roundTripMs));
    return { session, answerWithinMs };
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
      const startedAt = Date.now();
      session.health().then(
        () => {
          if (this.stopped || this.session !== session) return;
          this.roundTripMs = Date.now() - startedAt;
          this.check(session);
        },
        () => this.lost(session),
      );
    }, this.checkEveryMs);
  }
}
