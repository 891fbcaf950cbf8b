import type { Observable } from 'rxjs';
import type { PglnBackoffOptions, PglnExecutor, PglnHost, PglnNotifyManyQuery, PglnNotifyQuery, PglnState, PglnStateChange } from './interfaces/index.js';
import type { Logger } from '@nestjs/common';
import type { ProbeVerdict } from './pgln.receive-probe.js';
import type { ResyncSlots } from './pgln.resync-gate.js';
import type { BackendIdentity, ListenSessionEvents, SessionHealth } from './pgln.session.js';

/** A LISTEN session as the listener uses it: pg's is {@link ListenSession}. */
export interface Session {
  /** Its backend, once connected. */
  readonly identity?: BackendIdentity;
  /** The host it connected to, `host:port`, and why it skipped those before it, when it chose among several (for logs). */
  readonly server?: string;
  /** The host it connected to, when it chose among several. */
  readonly host?: PglnHost;
  connect(): Promise<void>;
  /** LISTENs on every name; resolves with those the server refused (see {@link ListenSession.listen}). */
  listen(names: readonly string[]): Promise<Map<string, Error>>;
  unlisten(name: string): Promise<void>;
  health(): Promise<SessionHealth>;
  /** Terminates the backends of earlier sessions still there; resolves with their PIDs. */
  terminate(backends: readonly BackendIdentity[]): Promise<number[]>;
  /** Whether it hears notifications sent from other connections (the startup probe); its connection ends with `signal`. */
  probe(signal: AbortSignal): Promise<ProbeVerdict>;
  close(): Promise<void>;
  /** Drops the connection at once, without telling the owner. */
  destroy(): void;
}

/** A notify statement, the notifications it sends as the application gave them, and where it runs. */
export interface Outgoing {
  readonly query: PglnNotifyQuery | PglnNotifyManyQuery;
  /** As given to `notify` / `notifyMany` (an in-memory transport records them). */
  readonly notifications: readonly { readonly channel: string; readonly payload: unknown }[];
  /** Names the call in a timeout error. */
  readonly what: () => string;
  /** The caller's connection, inside their transaction; without it, the transport's own. */
  readonly executor?: PglnExecutor;
}

/**
 * How an instance reaches PostgreSQL: LISTEN sessions, and sending. node-postgres's
 * ({@link PgTransport}) unless one is provided under {@link PGLN_TRANSPORT}, as
 * `nestjs-pgln/testing` does with its in-memory bus.
 */
export interface PglnTransport {
  /** Where it connects, for logs: `user@host:port/database`, never a password. */
  readonly target: string;
  /**
   * A LISTEN session, not connected yet; a `spare` one connects under another `application_name`
   * and takes the listener's with its first LISTEN.
   */
  session(events: ListenSessionEvents, options?: { spare?: boolean }): Session;
  /** Sends a notify statement; resolves once it was accepted. */
  send(outgoing: Outgoing): Promise<void>;
  /** Runs a statement through the pool (large payloads' table), where there is a database. */
  query?(text: string, values?: unknown[]): Promise<{ rows: any[] }>;
  /** Ends what it owns, at shutdown, within a bound. */
  end(): Promise<void>;
  /**
   * The reconnect backoff its sessions need, in place of the application's (the in-memory bus: a
   * lost session is back at once, so that tests never wait on production delays).
   */
  readonly reconnect?: Required<PglnBackoffOptions>;
  /** Slots shared by the fleet for out-of-sync runs (`resync.concurrency`), where there is a database to hold them. */
  resyncSlots?(name: string, concurrency: number, holdMs: number, logger: Logger): ResyncSlots;
  /** The session the listener now listens on (undefined: it lost it): the pool sends where it listens. */
  live?(session: Session | undefined): void;
  /** The listener it serves, once created (the in-memory bus waits on its channels). */
  attach?(listener: TransportListener): void;
}

/**
 * What a transport may see of the listener it serves ({@link PglnListener}'s own members, named
 * here so that the published types need nothing of the listener's, OpenTelemetry's among them).
 */
export interface TransportListener {
  readonly state: PglnState;
  readonly state$: Observable<PglnStateChange>;
  /** Resolves once no handler of the channel (of any, without a name) runs or waits to run. */
  settled(name?: string): Promise<void>;
}

/** Provider token of an instance's transport, when not node-postgres's. */
export const PGLN_TRANSPORT = Symbol('PGLN_TRANSPORT');
