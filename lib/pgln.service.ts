import {
  Inject,
  Injectable,
  Logger,
  Optional,
  type OnApplicationBootstrap,
  type OnApplicationShutdown,
  type OnModuleDestroy,
  type OnModuleInit,
} from '@nestjs/common';
import { Observable } from 'rxjs';
import { PglnError } from './errors/index.js';
import type {
  PglnChannel,
  PglnChannelEvent,
  PglnExecutor,
  PglnListenHandlers,
  PglnModuleOptions,
  PglnNotifyManyQuery,
  PglnNotifyOptions,
  PglnNotifyQuery,
  PglnOutgoingNotification,
  PglnState,
  PglnStateChange,
  PglnStats,
} from './interfaces/index.js';
import { DEFAULT_CONNECTION, PGLN_CONNECTION_NAME } from './pgln.constants.js';
import { PglnExplorer } from './pgln.explorer.js';
import type { Subscriber } from './channel/subscriber.js';
import { PglnListener } from './pgln.listener.js';
import { isPromiseLike } from './pgln.promises.js';
import { loadTelemetry } from './pgln.telemetry.js';
import { channelName, isChannelDefinition } from './pgln.define-channel.js';
import {
  LISTEN_HANDLER_NOT_FUNCTION,
  LISTEN_WITHOUT_HANDLER,
  preview,
} from './pgln.messages.js';
import { PayloadStore } from './pgln.payload-store.js';
import { PgTransport } from './pgln.pg-transport.js';
import { PGLN_TRANSPORT, type PglnTransport } from './pgln.transport.js';
import { PGLN_MODULE_OPTIONS } from './pgln.module-definition.js';
import { resolveOptions, type ResolvedPglnOptions } from './pgln.options.js';
import {
  checkExecutor,
  describeChannels,
  encodeNotification,
  encodeNotifications,
  synchronously,
  type Encoded,
  toNotifyManyQuery,
  toNotifyQuery,
} from './pgln.notify-query.js';

/**
 * Sends notifications and manages runtime listeners. Inject it anywhere once `PglnModule` is
 * imported. Decorated handlers need no call: they are subscribed at bootstrap.
 */
@Injectable()
export class PglnService implements OnModuleInit, OnApplicationBootstrap, OnModuleDestroy, OnApplicationShutdown {
  private readonly logger: Logger;
  private readonly options: ResolvedPglnOptions;
  private readonly listener: PglnListener;
  private readonly transport: PglnTransport;
  /** Where payloads too large for pg_notify go, with `largePayloads`. */
  private readonly largeTable?: string;
  /** The table of large payloads, with `largePayloads` and a database. */
  private readonly payloads?: PayloadStore;

  constructor(
    @Inject(PGLN_MODULE_OPTIONS) options: PglnModuleOptions,
    private readonly explorer: PglnExplorer,
    /** The instance's name: `'default'`, or the `name` given to `PglnModule.forRoot()`. */
    @Inject(PGLN_CONNECTION_NAME) readonly name: string,
    /** How it reaches PostgreSQL: node-postgres, unless one is provided (`nestjs-pgln/testing`'s bus). */
    @Optional() @Inject(PGLN_TRANSPORT) transport?: PglnTransport,
  ) {
    this.logger = new Logger(name === DEFAULT_CONNECTION ? PglnService.name : `${PglnService.name}(${name})`);
    const reconnect = transport?.reconnect;
    this.options = resolveOptions(reconnect ? { ...options, reconnect } : options, name, { connection: !transport });
    const { connection, notifyTimeoutMs, healthCheck } = this.options;
    this.transport = transport ?? new PgTransport(connection!, notifyTimeoutMs, healthCheck.timeoutMs, this.logger);
    const { largePayloads } = this.options;
    this.largeTable = largePayloads?.table;
    const query = this.transport.query?.bind(this.transport);
    if (largePayloads && query) {
      this.payloads = new PayloadStore(query, largePayloads.table, largePayloads.retentionMs, notifyTimeoutMs, this.logger);
    }
    this.listener = new PglnListener(name, this.options, this.transport, this.logger, this.payloads);
    this.transport.attach?.(this.listener);
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
   * A snapshot for health checks and metrics, the same figures the OpenTelemetry metrics report:
   * the state and since when; notifications received, delivered, dropped, rejected; handler
   * failures; resyncs by reason; reconnects; what waits in each channel's queue; and what the last
   * health check measured (its round trip, and how full PostgreSQL's notification queue is).
   * Totals and each channel's figures; totals include channels no longer listened on.
   */
  stats(): PglnStats {
    return this.listener.stats();
  }

  /**
   * Sends a notification. By default through the module's pool (never the LISTEN connection), on
   * its own: it is delivered at once. With `{ executor }`, on your connection inside your
   * transaction: delivered when that commits, never if it rolls back, and never before the data
   * it commits with is visible. Resolves once PostgreSQL accepted it.
   *
   * ```ts
   * await pgln.notify(Products, change);                                     // typed, validated
   * await dataSource.transaction((em) => pgln.notify(Products, change, { executor: em }));
   * ```
   *
   * @param channel a definition (`defineChannel`), or a name
   * @param payload for a definition, its payload type (sent as JSON); for a name, a string is sent as
   *   is, `undefined` as the empty payload, anything else as JSON
   * @throws PglnChannelError when the channel name is empty, over 63 bytes in UTF-8, holds a NUL or a lone surrogate
   * @throws PglnPayloadError when the payload fails the channel's schema, is 8000 bytes or more in UTF-8, holds a
   *   NUL or a lone surrogate, or cannot be JSON-encoded; nothing is sent
   * @throws PglnTimeoutError (pool only) when no connection or no answer came within `notifyTimeoutMs` (after
   *   sending, it may or may not have been accepted); otherwise the driver's (or your executor's) error
   */
  notify<TInput>(channel: PglnChannel<any, TInput>, payload: NoInfer<TInput>, options?: PglnNotifyOptions): Promise<void>;
  notify(channel: string, payload?: string | object, options?: PglnNotifyOptions): Promise<void>;
  notify(channel: string | PglnChannel, payload?: unknown, options?: PglnNotifyOptions): Promise<void> {
    // Not an async function: the transport's promise is returned as it is, without a promise and a turn more.
    try {
      const executor = checkExecutor(options);
      const encoded = encodeNotification(channel, payload, this.largeTable);
      if (isPromiseLike(encoded)) return encoded.then((checked) => this.sendOne(checked, payload, executor));
      return this.sendOne(encoded, payload, executor);
    } catch (error) {
      // An invalid channel, payload or executor rejects, as from an async function: nothing is sent.
      return Promise.reject(error);
    }
  }

  private sendOne(encoded: Encoded, payload: unknown, executor: PglnExecutor | undefined): Promise<void> {
    const query = toNotifyQuery(encoded);
    const notifications = [{ channel: encoded[0], payload }];
    return this.transport.send({ query, notifications, executor, what: () => `notify on ${preview(encoded[0])}` });
  }

  /**
   * Sends many notifications in one round trip and one statement: PostgreSQL accepts all of them
   * or none, and delivers them in this order when the transaction commits (the pool's own, or
   * yours with `{ executor }`, as for {@link notify}). Every item is validated, as by
   * {@link notify}, before anything is sent. As within any transaction, PostgreSQL delivers
   * identical notifications (same channel and payload) only once.
   *
   * @throws PglnChannelError / PglnPayloadError for the first invalid item, naming it; nothing is sent
   */
  async notifyMany<const TChannels extends readonly (string | PglnChannel<any, any>)[]>(
    notifications: { readonly [K in keyof TChannels]: PglnOutgoingNotification<TChannels[K]> },
    options?: PglnNotifyOptions,
  ): Promise<void> {
    const executor = checkExecutor(options);
    const items = notifications as readonly PglnOutgoingNotification[];
    const encoded = await encodeNotifications(items, this.largeTable);
    if (encoded.length === 0) return;
    const query = toNotifyManyQuery(encoded);
    const sent = items.map(({ payload }, i) => ({ channel: encoded[i]![0], payload }));
    await this.transport.send({ query, notifications: sent, executor, what: () => `notifyMany of ${encoded.length} notifications` });
  }

  /**
   * The statement that sends one notification, validated as by {@link notify}, to run anywhere:
   * `{ text: 'SELECT pg_notify($1, $2)', values: [channel, payloadText] }`. For code that builds
   * its own queries (a raw `tx.query(q.text, q.values)`, a migration, a batch).
   *
   * @throws PglnChannelError / PglnPayloadError as {@link notify} does; also when the channel's
   *   schema validates asynchronously (use `notify` with `{ executor }` then)
   */
  notifyQuery<TInput>(channel: PglnChannel<any, TInput>, payload: NoInfer<TInput>): PglnNotifyQuery;
  notifyQuery(channel: string, payload?: string | object): PglnNotifyQuery;
  notifyQuery(channel: string | PglnChannel, payload?: unknown): PglnNotifyQuery {
    return toNotifyQuery(synchronously(encodeNotification(channel, payload, this.largeTable), channelName(channel)));
  }

  /**
   * The statement that sends many notifications in order, validated as by {@link notifyMany}:
   * `{ text, values: [channels, payloadTexts] }` (`pg_notify` over `unnest($1::text[], $2::text[])`).
   *
   * @throws as {@link notifyQuery}
   */
  notifyManyQuery<const TChannels extends readonly (string | PglnChannel<any, any>)[]>(notifications: {
    readonly [K in keyof TChannels]: PglnOutgoingNotification<TChannels[K]>;
  }): PglnNotifyManyQuery {
    const items = notifications as readonly PglnOutgoingNotification[];
    return toNotifyManyQuery(synchronously(encodeNotifications(items, this.largeTable), describeChannels(items)));
  }

  /**
   * Listens on a channel at runtime. Resolves once LISTEN is active and `onOutOfSync` (if given)
   * has completed with reason `'listen'`; from then on it also runs after every reconnect.
   * Several listeners may share a channel (with each other and with decorated handlers). The
   * handlers are called as methods of `handlers`, so a class instance works. A handler of the
   * channel may itself await `listen()` on it: the first sync does not wait for it.
   *
   * @param channel a definition (payloads are then parsed JSON, validated by its schema), or a name
   * @returns a function that removes this listener (and UNLISTENs when it was the channel's last);
   *   once its promise resolves, none of these handlers is called again (one already running
   *   finishes on its own, so a handler may remove itself)
   * @throws PglnChannelError for a channel name PostgreSQL would reject or truncate
   * @throws PglnClosedError when the application shuts down first
   */
  async listen<TPayload>(
    channel: PglnChannel<TPayload, any>,
    handlers: Omit<PglnListenHandlers<TPayload>, 'json'>,
  ): Promise<() => Promise<void>>;
  async listen<TPayload = string>(channel: string, handlers: PglnListenHandlers<TPayload>): Promise<() => Promise<void>>;
  async listen(channel: string | PglnChannel, handlers: PglnListenHandlers<unknown>): Promise<() => Promise<void>> {
    const subscriber = this.subscribe(channel, handlers);
    await subscriber.ready;
    return () => this.listener.unsubscribe(subscriber);
  }

  /** The subscriber of a `listen()` (or `observe()`), its handlers checked; it starts connecting if bootstrap has not. */
  private subscribe(channel: string | PglnChannel, handlers: PglnListenHandlers<unknown>): Subscriber {
    const name = channelName(channel);
    if (typeof handlers?.onNotification !== 'function' && typeof handlers?.onOutOfSync !== 'function') {
      throw new PglnError(LISTEN_WITHOUT_HANDLER(name));
    }
    for (const key of ['onNotification', 'onOutOfSync', 'onError'] as const) {
      const value: unknown = handlers[key];
      if (value !== undefined && typeof value !== 'function') {
        throw new PglnError(LISTEN_HANDLER_NOT_FUNCTION(name, key, value === null ? 'null' : typeof value));
      }
    }
    const definition = isChannelDefinition(channel) ? channel : undefined;
    // Called as methods of the object given, so that handlers may use `this`.
    const { onNotification, onOutOfSync, onError } = handlers;
    const [subscriber] = this.listener.subscribe(
      [
        {
          channel: name,
          spec: {
            name: `listen(${JSON.stringify(name)})`,
            owner: handlers,
            onNotification: onNotification?.bind(handlers),
            onOutOfSync: onOutOfSync?.bind(handlers),
            onError: onError?.bind(handlers),
            json: definition ? true : (handlers.json ?? false),
            schema: definition?.schema,
            exactlyOnce: definition?.exactlyOnce,
          },
        },
      ],
      'listen',
    );
    // Called before bootstrap (say, from onModuleInit), it must not wait for bootstrap to connect.
    this.listener.start().catch(() => undefined);
    return subscriber!;
  }

  /**
   * A channel as a cold RxJS `Observable` of {@link PglnChannelEvent}s. Subscribing listens (as
   * {@link listen} does, sharing the one LISTEN connection with everything else); the first event is
   * `{ type: 'out-of-sync', reason: 'listen' }` once LISTEN is active, then `{ type: 'notification',
   * payload, processId }` per notification, in order (typed, and validated by the schema, for a
   * definition), and an out-of-sync event again after every resync: a consumer refetches on each
   * and applies the notifications that follow. Unsubscribing removes the subscription (and
   * UNLISTENs when it was the channel's last). An error of `listen()` (a bad name, shutdown) is the
   * Observable's error.
   *
   * Events are handed to the subscriber as they come, never buffered here. Returned from an
   * `@Sse()` route it streams a channel to browsers, with `map((event) => ({ type: event.type, data:
   * event }))`; NestJS (11.2.8 and later, 12.2.0 and later) holds the events of a client that does
   * not read up to the route's `maxPendingDataLength` (4 MB by default), then drops the connection
   * (earlier versions hold them without bound), and a browser's
   * `EventSource` reconnects on its own: its new subscription starts with an out-of-sync event, so
   * the page refetches instead of missing what was dropped.
   *
   * ```ts
   * @Sse('products/events')
   * events(): Observable<MessageEvent> {
   *   return this.pgln.observe(Products).pipe(map((event) => ({ type: event.type, data: event })));
   * }
   * ```
   */
  observe<TPayload>(channel: PglnChannel<TPayload, any>): Observable<PglnChannelEvent<TPayload>>;
  observe(channel: string): Observable<PglnChannelEvent<string>>;
  observe(channel: string | PglnChannel): Observable<PglnChannelEvent<unknown>> {
    return new Observable<PglnChannelEvent<unknown>>((observer) => {
      let subscriber: Subscriber;
      try {
        subscriber = this.subscribe(channel, {
          onOutOfSync: (event) => observer.next({ type: 'out-of-sync', reason: event.reason }),
          onNotification: (payload: unknown, notification) => observer.next({ type: 'notification', payload, processId: notification.processId }),
        });
      } catch (error) {
        observer.error(error);
        return;
      }
      // Not in sync before it is removed (unlisten(), shutdown): that error; removed later: the stream ends.
      subscriber.ready.then(
        () => {
          // Removed already (a handler unlistened in the tick it went in sync): no abort event will come.
          if (subscriber.removed.aborted) observer.complete();
          else subscriber.removed.addEventListener('abort', () => observer.complete(), { once: true });
        },
        (error: unknown) => observer.error(error),
      );
      return () => void this.listener.unsubscribe(subscriber);
    });
  }

  /**
   * Stops listening on a channel: removes every handler of it, decorated ones included, and
   * UNLISTENs. Once it resolves, no handler of the channel is called again (one already running
   * finishes on its own); a `listen()` on it still waiting for its first sync rejects.
   */
  async unlisten(channel: string | PglnChannel): Promise<void> {
    await this.listener.unlisten(channelName(channel));
  }

  /**
   * Runs the channel's out-of-sync handlers now, with reason `'manual'`, exactly as after a
   * reconnect: each provider's (or `listen()`'s) notifications are held meanwhile and delivered
   * after its handler. Resolves once each has completed a run that began after this call (failing
   * ones are retried, as always; one removed meanwhile is not waited for). For an admin endpoint
   * ("reload the cache now") and for tests. A run already due (after a reconnect, say) answers this
   * call too.
   *
   * Called from a handler of the same provider, do not await it: it runs after that handler.
   *
   * @throws PglnError when nothing listens on the channel, or it is unlistened before the runs completed
   * @throws PglnClosedError when the application shuts down first
   */
  async resync(channel: string | PglnChannel): Promise<void> {
    await this.listener.resync(channelName(channel));
  }

  /**
   * @internal Loads OpenTelemetry, when installed and an SDK is registered, and creates the
   * large-payload table if it is missing: the modules that import this one run their own
   * `onModuleInit` after it, and may send large payloads there. No table to send through: the
   * application does not start (nothing is connected to LISTEN yet).
   */
  async onModuleInit(): Promise<void> {
    const [telemetry] = await Promise.all([
      loadTelemetry(this.name, this.options.telemetry, () => this.stats()),
      this.payloads?.prepare(),
    ]);
    this.listener.telemetry = telemetry;
  }

  /** @internal Subscribes decorated handlers and connects; `app.init()` waits until they are in sync. */
  async onApplicationBootstrap(): Promise<void> {
    const subscriptions = this.listener.subscribe(this.explorer.explore(this.name), 'connect');
    await this.listener.start();
    await Promise.all(subscriptions.map((subscription) => subscription.ready));
  }

  /** @internal Stops delivery, waits for running handlers (bounded), UNLISTENs and disconnects. */
  async onModuleDestroy(): Promise<void> {
    await this.listener.close();
    this.payloads?.close();
  }

  /**
   * @internal Ends the pool if the module created it (after other modules had their chance to
   * notify): a notification in flight gets `notifyTimeoutMs`, connections `healthCheck.timeoutMs`
   * to close, then what is left is destroyed.
   */
  async onApplicationShutdown(): Promise<void> {
    await this.transport.end();
  }
}
