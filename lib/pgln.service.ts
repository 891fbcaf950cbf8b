import {
  Inject,
  Injectable,
  Logger,
  type OnApplicationBootstrap,
  type OnApplicationShutdown,
  type OnModuleDestroy,
} from '@nestjs/common';
import type { Pool, PoolClient } from 'pg';
import type { Observable } from 'rxjs';
import { PglnError, PglnTimeoutError } from './errors/index.js';
import type {
  PglnListenHandlers,
  PglnModuleOptions,
  PglnOutgoingNotification,
  PglnState,
  PglnStateChange,
} from './interfaces/index.js';
import { PglnExplorer } from './pgln.explorer.js';
import { PglnListener } from './pgln.listener.js';
import { destroyConnection, isServerError } from './pgln.connection.js';
import {
  LISTEN_HANDLER_NOT_FUNCTION,
  LISTEN_WITHOUT_HANDLER,
  NOTIFY_MANY_NOT_ARRAY,
  NOTIFY_NO_CONNECTION,
  NOTIFY_POOL_STUCK,
  NOTIFY_TIMEOUT,
  POOL_CLIENT_ERROR,
  preview,
} from './pgln.messages.js';
import { withTimeout } from './pgln.timeout.js';
import { PGLN_MODULE_OPTIONS } from './pgln.module-definition.js';
import { resolveOptions, type ResolvedPglnOptions } from './pgln.options.js';
import { assertChannel, encodePayload } from './pgln.validation.js';

/** The least time a notify query is given once it has a connection (less when notifyTimeoutMs is small). */
const MIN_QUERY_MS = 1_000;

const NOTIFY_SQL = 'SELECT pg_notify($1, $2)';
// unnest keeps the order of the arrays, so the notifications are queued (and delivered) in order.
const NOTIFY_MANY_SQL = 'SELECT pg_notify(n.channel, n.payload) FROM unnest($1::text[], $2::text[]) AS n(channel, payload)';

/**
 * Sends notifications and manages runtime listeners. Inject it anywhere once `PglnModule` is
 * imported. Decorated handlers need no call: they are subscribed at bootstrap.
 */
@Injectable()
export class PglnService implements OnApplicationBootstrap, OnModuleDestroy, OnApplicationShutdown {
  private readonly logger = new Logger(PglnService.name);
  private readonly options: ResolvedPglnOptions;
  private readonly listener: PglnListener;
  /** Connections the pool has yet to hand over for notifications that timed out waiting for them. */
  private owed = 0;

  constructor(
    @Inject(PGLN_MODULE_OPTIONS) options: PglnModuleOptions,
    private readonly explorer: PglnExplorer,
  ) {
    this.options = resolveOptions(options);
    this.listener = new PglnListener(this.options, this.logger);
    if (this.options.ownsPool) {
      // An idle pooled client whose connection dies emits 'error' on the pool; unheard, it would crash the app.
      this.options.pool.on('error', (error) => this.logger.warn(POOL_CLIENT_ERROR(error.message)));
    }
  }

  /** The LISTEN connection's state: `'idle'`, `'connecting'`, `'syncing'`, `'live'`, `'reconnecting'` or `'closed'`. */
  get state(): PglnState {
    return this.listener.state;
  }

  /**
   * The current state on subscription, then every transition (each also logged once); completes
   * when the module shuts down. For health checks and metrics: `'live'` means every channel is in sync.
   */
  get state$(): Observable<PglnStateChange> {
    return this.listener.state$;
  }

  /**
   * Sends a notification through the pool (`SELECT pg_notify($1, $2)`), never through the LISTEN
   * connection. Resolves once PostgreSQL accepted it; it is delivered when the sending
   * transaction commits (at once, outside a transaction).
   *
   * @param payload a string is sent as is, `undefined` as the empty payload, anything else as JSON
   * @throws PglnChannelError when the channel is empty, over 63 bytes in UTF-8, or holds a NUL
   * @throws PglnPayloadError when the payload is 8000 bytes or more in UTF-8, holds a NUL, or cannot be JSON-encoded
   * @throws PglnTimeoutError when PostgreSQL does not answer within `notifyTimeoutMs` (it may or may not have
   *   accepted the notification); otherwise the driver's error when the database cannot be reached
   */
  async notify(channel: string, payload?: string | object): Promise<void> {
    assertChannel(channel);
    await this.send(NOTIFY_SQL, [channel, encodePayload(channel, payload)], () => `notify on ${preview(channel)}`);
  }

  /**
   * Sends many notifications in one round trip and one transaction: PostgreSQL accepts all of
   * them or none, and delivers them in this order when it commits. Every item is validated, as by
   * {@link notify}, before anything is sent. As within any transaction, PostgreSQL delivers
   * identical notifications (same channel and payload) only once.
   *
   * @throws PglnChannelError / PglnPayloadError for the first invalid item, naming it; nothing is sent
   */
  async notifyMany(notifications: readonly PglnOutgoingNotification[]): Promise<void> {
    if (!Array.isArray(notifications)) throw new PglnError(NOTIFY_MANY_NOT_ARRAY(typeof notifications));
    if (notifications.length === 0) return;
    const channels: string[] = [];
    const payloads: string[] = [];
    for (const { channel, payload } of notifications) {
      assertChannel(channel);
      channels.push(channel);
      payloads.push(encodePayload(channel, payload));
    }
    await this.send(NOTIFY_MANY_SQL, [channels, payloads], () => `notifyMany of ${channels.length} notifications`);
  }

  /**
   * Runs a notify statement on a pooled connection. `notifyTimeoutMs` bounds the whole call, from
   * asking the pool for a connection to PostgreSQL's answer; `what` names it in a timeout error.
   */
  private async send(sql: string, values: unknown[], what: () => string): Promise<void> {
    const { pool, notifyTimeoutMs } = this.options;
    const deadline = Date.now() + notifyTimeoutMs;
    const client = await this.checkout(what);
    // The query gets at least this long: with less, a healthy connection would look hung.
    const floor = Math.min(notifyTimeoutMs / 2, MIN_QUERY_MS);
    if (deadline - Date.now() < floor) {
      client.release();
      throw new PglnTimeoutError(NOTIFY_NO_CONNECTION(what(), notifyTimeoutMs, pool));
    }
    // pg-pool stops listening for errors of a connection it hands out: unheard, one would crash the process.
    let broken = false;
    const onError = () => (broken = true);
    client.on('error', onError);
    try {
      await withTimeout(client.query(sql, values), deadline - Date.now(), () => {
        broken = true;
        return new PglnTimeoutError(NOTIFY_TIMEOUT(what(), notifyTimeoutMs));
      });
      client.release();
    } catch (error) {
      if (broken || !isServerError(error)) {
        // Failed, or hung (a half-open socket never answers): destroyed rather than reused.
        client.release(error as Error);
        destroyConnection(client);
      } else {
        // The server answered with an error (a full notification queue, say): pg-pool keeps the
        // connection if its session lives on.
        client.release();
      }
      throw error;
    } finally {
      client.removeListener('error', onError);
    }
  }

  /**
   * A connection from the pool within `notifyTimeoutMs`. One handed over later goes straight
   * back. While the pool still owes as many late connections as it may open, nothing more is
   * asked of it: the call fails at once instead of adding a waiter.
   */
  private async checkout(what: () => string): Promise<PoolClient> {
    const { pool, notifyTimeoutMs } = this.options;
    const limit = (pool as Pool & { options?: { max?: number } }).options?.max ?? 10;
    if (this.owed >= limit) throw new PglnTimeoutError(NOTIFY_POOL_STUCK(what(), this.owed));
    const checkout = pool.connect();
    return withTimeout(checkout, notifyTimeoutMs, () => {
      this.owed++;
      checkout.then(
        (late) => {
          this.owed--;
          late.release();
        },
        () => this.owed--,
      );
      return new PglnTimeoutError(NOTIFY_NO_CONNECTION(what(), notifyTimeoutMs, pool));
    });
  }

  /**
   * Listens on a channel at runtime. Resolves once LISTEN is active and `onOutOfSync` (if given)
   * has completed with reason `'listen'`; from then on it also runs after every reconnect.
   * Several listeners may share a channel (with each other and with decorated handlers).
   *
   * @returns a function that removes this listener (and UNLISTENs when it was the channel's last);
   *   once its promise resolves, none of these handlers is called again (one already running
   *   finishes on its own, so a handler may remove itself)
   * @throws PglnChannelError for a channel name PostgreSQL would reject or truncate
   * @throws PglnClosedError when the application shuts down first
   */
  async listen<TPayload = string>(
    channel: string,
    handlers: PglnListenHandlers<TPayload>,
  ): Promise<() => Promise<void>> {
    assertChannel(channel);
    if (typeof handlers?.onNotification !== 'function' && typeof handlers?.onOutOfSync !== 'function') {
      throw new PglnError(LISTEN_WITHOUT_HANDLER(channel));
    }
    for (const key of ['onNotification', 'onOutOfSync', 'onError'] as const) {
      const value: unknown = handlers[key];
      if (value !== undefined && typeof value !== 'function') {
        throw new PglnError(LISTEN_HANDLER_NOT_FUNCTION(channel, key, value === null ? 'null' : typeof value));
      }
    }
    // Called as methods of the object given, so that handlers may use `this`.
    const { onNotification, onOutOfSync, onError } = handlers;
    const [subscription] = this.listener.subscribe(
      [
        {
          channel,
          spec: {
            name: `listen(${JSON.stringify(channel)})`,
            owner: handlers,
            onNotification: onNotification?.bind(handlers),
            onOutOfSync: onOutOfSync?.bind(handlers),
            onError: onError?.bind(handlers),
            json: handlers.json ?? false,
          },
        },
      ],
      'listen',
    );
    // Called before bootstrap (say, from onModuleInit), it must not wait for bootstrap to connect.
    this.listener.start().catch(() => undefined);
    await subscription!.ready;
    return () => this.listener.unsubscribe(subscription!);
  }

  /**
   * Stops listening on a channel: removes every handler of it, decorated ones included, and
   * UNLISTENs. Once it resolves, no handler of the channel is called again (one already running
   * finishes on its own); a `listen()` on it still waiting for its first sync rejects.
   */
  async unlisten(channel: string): Promise<void> {
    assertChannel(channel);
    await this.listener.unlisten(channel);
  }

  /** @internal Subscribes decorated handlers and connects; `app.init()` waits until they are in sync. */
  async onApplicationBootstrap(): Promise<void> {
    const subscriptions = this.listener.subscribe(this.explorer.explore(), 'connect');
    await this.listener.start();
    await Promise.all(subscriptions.map((subscription) => subscription.ready));
  }

  /** @internal Stops delivery, waits for running handlers (bounded), UNLISTENs and disconnects. */
  async onModuleDestroy(): Promise<void> {
    await this.listener.close();
  }

  /** @internal Ends the pool if the module created it (after other modules had their chance to notify). */
  async onApplicationShutdown(): Promise<void> {
    if (this.options.ownsPool) await this.options.pool.end();
  }
}
