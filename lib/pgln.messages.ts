import { MAX_CHANNEL_BYTES, MAX_PAYLOAD_BYTES } from './pgln.constants.js';

/** Shows a value in an error message without flooding the log with a huge string. */
export function preview(value: string, max = 80): string {
  const shown = value.length > max ? `${value.slice(0, max)}…` : value;
  return JSON.stringify(shown);
}

export const CHANNEL_NOT_STRING = (type: string) =>
  `Channel name must be a string, got ${type}.`;

export const CHANNEL_EMPTY = () => 'Channel name must not be empty.';

export const CHANNEL_TOO_LONG = (channel: string, bytes: number) =>
  `Channel name ${preview(channel)} is ${bytes} bytes in UTF-8; PostgreSQL keeps at most ${MAX_CHANNEL_BYTES} bytes ` +
  '(LISTEN would silently truncate it, and pg_notify rejects it).';

export const CHANNEL_NOT_WELL_FORMED = (channel: string) =>
  `Channel name ${preview(channel)} is not well-formed UTF-16: it holds a lone surrogate, which PostgreSQL would ` +
  'receive as U+FFFD, so notifications would come back under another name.';

export const CHANNEL_HAS_NUL = (channel: string) =>
  `Channel name ${preview(channel)} contains a NUL character, which PostgreSQL identifiers cannot hold.`;

export const PAYLOAD_TOO_LARGE = (channel: string, bytes: number, reserved = 0) =>
  `Payload for channel ${preview(channel)} is ${bytes} bytes in UTF-8; pg_notify accepts at most ${MAX_PAYLOAD_BYTES} bytes` +
  (reserved ? `, of which the exactly-once envelope takes ${reserved} (so at most ${MAX_PAYLOAD_BYTES - reserved} for the payload)` : '') +
  '. Send a key and let the receiver read the row, or set largePayloads: {} in the module options to send it through a table.';

export const PAYLOAD_HAS_NUL = (channel: string) =>
  `Payload for channel ${preview(channel)} contains a NUL character, which PostgreSQL text cannot hold.`;

export const PAYLOAD_NOT_WELL_FORMED = (channel: string) =>
  `Payload for channel ${preview(channel)} is not well-formed UTF-16: it holds a lone surrogate, which PostgreSQL ` +
  'would receive as U+FFFD. Send a well-formed string, or an object (JSON escapes lone surrogates).';

export const PAYLOAD_NOT_SERIALIZABLE = (channel: string, reason: string) =>
  `Payload for channel ${preview(channel)} cannot be encoded as JSON: ${reason}`;

export const PAYLOAD_INVALID = (channel: string, what: string, issues: string) =>
  `${what} channel ${preview(channel)} does not match the channel's schema: ${issues}`;

export const SCHEMA_ASYNC = (channel: string) =>
  `The schema of channel ${preview(channel)} validates asynchronously, so notifyQuery()/notifyManyQuery() cannot ` +
  'build its statement at once: use notify()/notifyMany() with { executor } instead.';

export const EXECUTOR_INVALID = (type: string) =>
  `executor must be an object with query(text, values), such as a pg client or a TypeORM EntityManager, or a ` +
  `function (text, values) => Promise, got ${type}.`;

export const NOT_LISTENING = (channel: string) =>
  `Cannot resync ${preview(channel)}: nothing listens on it (no @OnNotification/@OnOutOfSync handler, no listen()).`;

export const RESYNC_ABANDONED = (channel: string) =>
  `resync(${preview(channel)}) did not complete: the channel was unlistened or the application is shutting down.`;

export const EXACTLY_ONCE_NOT_BOOLEAN = (channel: string, type: string) =>
  `defineChannel(${preview(channel)}): exactlyOnce must be true or false, got ${type}.`;

export const SCHEMA_NOT_STANDARD = (channel: string) =>
  `defineChannel(${preview(channel)}): schema must be a Standard Schema (an object with ['~standard'].validate, ` +
  'as zod 4, valibot and arktype schemas are).';

export const PAYLOAD_NOT_JSON = (channel: string, reason: string) =>
  `Payload received on channel ${preview(channel)} is not valid JSON: ${reason}`;

export const OPTIONS_INVALID = (problems: string[]) =>
  `Invalid PglnModule options:\n  - ${problems.join('\n  - ')}`;

export const CLOSED = (what: string) => `Cannot ${what}: the Pgln listener has been closed (the application is shutting down).`;

export const HANDLER_FAILED = (handler: string, channel: string) =>
  `${handler} failed on channel ${preview(channel)}`;

export const CONNECTION_NAME_INVALID = (where: string, given: string) =>
  `${where}: name must be a non-empty string naming the instance (e.g. 'audit'), got ${given}`;

export const DUPLICATE_CONNECTION = (name: string) =>
  `PglnModule.forRoot() is imported twice with the name ${JSON.stringify(name)}: every handler bound to it would be ` +
  'called twice. Import each instance once (in the root module; it is global), and give the others names of their own.';

export const UNKNOWN_INSTANCE = (name: string) =>
  `PglnHealthIndicator.isHealthy: no PglnModule.forRoot({ name: ${JSON.stringify(name)} }) is imported; ` +
  'give connection the name of an instance, or leave it out for the default one';

export const HANDLER_CONNECTION_INVALID = (channel: string, given: string) =>
  `Handler of ${JSON.stringify(channel)}: connection must be the non-empty name given to PglnModule.forRoot({ name }), got ${given}`;

export const UNKNOWN_CONNECTION = (handler: string, decorator: string, connection: string, known: readonly string[]) =>
  `${handler} is decorated with ${decorator} for connection ${JSON.stringify(connection)}, but no ` +
  `PglnModule.forRoot({ name: ${JSON.stringify(connection)} }) is imported (instances: ${known.map((name) => JSON.stringify(name)).join(', ')}). ` +
  'Import that instance, or fix the decorator\'s { connection } option.';

export const REQUEST_SCOPED_HANDLER = (handler: string, decorator: string) =>
  `${handler} is decorated with ${decorator} but its provider is request-scoped or transient; ` +
  'it is NOT registered. Move the handler to a singleton (default-scoped) provider.';

export const LISTEN_WITHOUT_HANDLER = (channel: string) =>
  `listen(${preview(channel)}) needs an onNotification or an onOutOfSync function.`;

export const LISTEN_HANDLER_NOT_FUNCTION = (channel: string, key: string, type: string) =>
  `listen(${preview(channel)}): ${key} must be a function, got ${type}.`;

export const POOL_CLIENT_ERROR = (message: string) =>
  `An idle connection of the notify pool failed (${message}); the pool replaces it on next use.`;

export const OVERFLOW_RESYNC = (channel: string, subscriber: string, dropped: number, limit: number) =>
  `Channel ${preview(channel)}: ${dropped} notifications were waiting for ${subscriber}, more than maxQueuedNotifications ` +
  `(${limit}); dropped them and queued its out-of-sync handler (reason 'overflow') to cover them.`;

export const OVERFLOW_DROPPED = (channel: string, dropped: number, limit: number, subscriber: string) =>
  `Channel ${preview(channel)}: dropped ${dropped} notifications, more than maxQueuedNotifications (${limit}) were waiting for ` +
  `${subscriber}, which has no out-of-sync handler to recover with. ` +
  'Add an @OnOutOfSync handler (or onOutOfSync), or make handlers faster.';

export const SNAPSHOT_UNREADABLE = (result: string) =>
  `event.snapshot(executor) read no snapshot: the executor answered ${result}. Give it something that returns rows ` +
  '(a pg client, a TypeORM EntityManager or QueryRunner, Prisma\'s $queryRawUnsafe, not $executeRawUnsafe), running ' +
  "the reload's transaction.";

export const SLOW_HANDLER = (handler: string, channel: string, elapsedMs: number, thresholdMs: number) =>
  `${handler} on channel ${preview(channel)} has been running for ${elapsedMs} ms (slowHandlerMs: ${thresholdMs}); ` +
  'it is not cancelled, and the channel waits for it.';

export const SLOW_SYNC_HANDLERS = (handlers: string[], elapsedMs: number, thresholdMs: number) =>
  `${handlers.join(', ')} ran synchronously for ${elapsedMs} ms (slowHandlerMs: ${thresholdMs}), ` +
  'blocking the event loop all that time.';

export const SLOW_HANDLER_DONE = (handler: string, channel: string, elapsedMs: number) =>
  `${handler} on channel ${preview(channel)} finished after ${elapsedMs} ms.`;

export const STARTUP_FATAL = (target: string, reason: string) =>
  `Cannot connect to ${target}: ${reason}. Retrying cannot fix this, so startup fails now: check the connection settings.`;

export const STARTUP_UNREACHABLE = (target: string, timeoutMs: number, reason: string) =>
  `Cannot reach PostgreSQL at ${target} within startupTimeoutMs (${timeoutMs} ms); last error: ${reason}`;

export const ATTEMPT_FAILED = (target: string, attempt: number, reason: string, delayMs: number) =>
  `Cannot connect to ${target} (attempt ${attempt}): ${reason}; retrying in ${delayMs} ms`;

export const NO_ANSWER = (what: string, timeoutMs: number) =>
  `${what} got no answer within ${timeoutMs} ms (healthCheck.timeoutMs); the connection is considered dead`;

export const CHANNELS_MISSING = (channels: string[]) =>
  `the LISTEN session no longer listens on ${channels.map((channel) => preview(channel)).join(', ')}`;

export const LISTEN_REFUSED = (channel: string, reason: string, handlers: string[]) =>
  `Cannot LISTEN on ${preview(channel)}: the server refused it: ${reason}; its handlers are removed and will not be ` +
  `called (${handlers.join('; ')}). The other channels are not affected.`;

export const UNLISTENED = (channel: string) =>
  `Stopped listening on ${preview(channel)} before this listener was in sync (unlisten() was called).`;

const percent = (fraction: number) => `${+(fraction * 100).toPrecision(3)}%`;

export const QUEUE_USAGE_HIGH = (usage: number, threshold: number) =>
  `PostgreSQL's notification queue is ${percent(usage)} full (healthCheck.queueUsageWarning: ${percent(threshold)}). ` +
  'A session that LISTENs but does not read (one idle in a long transaction, or a stuck backend) keeps it from being ' +
  'truncated; when it is full, every NOTIFY in the cluster fails. Look for it: SELECT pid, application_name, state, ' +
  "xact_start FROM pg_stat_activity WHERE state = 'idle in transaction' ORDER BY xact_start.";

export const QUEUE_USAGE_OK = (usage: number, threshold: number) =>
  `PostgreSQL's notification queue is back below healthCheck.queueUsageWarning (${percent(usage)} < ${percent(threshold)}).`;

export const LISTENER_POOLED = (target: string, timeoutMs: number) =>
  `The LISTEN connection to ${target} does not hear notifications sent from other connections (a probe sent ` +
  `from a second connection with the same settings did not arrive within ${timeoutMs} ms): it goes through a pooler in transaction or statement ` +
  'mode (such as PgBouncer with pool_mode = transaction), which hands each transaction to any server connection, ' +
  'so LISTEN seems to work and nothing ever arrives. Point the listener at the database itself, or at a ' +
  "session-mode pool: listener: { connectionString: 'postgres://user@db-host:5432/db' }.";

export const PROBE_INCONCLUSIVE = (reason: string) =>
  `Could not check that the LISTEN connection hears notifications from other connections (${reason}); ` +
  'going on. (A listener behind a transaction-mode pooler would hear nothing.)';

export const PREVIOUS_TERMINATED = (pids: number[]) =>
  `Terminated the backend(s) of earlier LISTEN connection(s) still on the server (pid ${pids.join(', ')}): ` +
  'listening without reading, they would pin its notification queue.';

export const TERMINATE_FAILED = (reason: string) =>
  `Cannot terminate the backends of earlier LISTEN connections (${reason}); they stay until TCP gives up on them, ` +
  'pinning the notification queue meanwhile. Grant pg_signal_backend, or use the same role, to let the module clean up.';

export const NOTIFY_TIMEOUT = (what: string, timeoutMs: number) =>
  `${what} got no answer within notifyTimeoutMs (${timeoutMs} ms); it may or may not have been sent`;

/** `within` names the limit that ran out: `notifyTimeoutMs (300 ms)`, or the pool's own connect timeout. */
export const NOTIFY_NO_CONNECTION = (
  what: string,
  within: string,
  pool: { totalCount: number; idleCount: number; waitingCount: number; options?: { max?: number } },
) =>
  `${what} got no connection from the pool within ${within}, so nothing was sent ` +
  `(pool: ${pool.totalCount} of max ${pool.options?.max ?? '?'} connections open, ${pool.idleCount} idle, ` +
  `${pool.waitingCount} callers waiting)`;

export const NOTIFY_POOL_STUCK = (what: string, owed: number) =>
  `${what} was not sent: the pool has yet to hand over the ${owed} connections asked for by notifications that ` +
  'timed out waiting for them (as many as it may open); no more are asked for until it does.';

export const NOTIFY_MANY_NOT_ARRAY = (type: string) =>
  `notifyMany() takes an array of { channel, payload }, got ${type}.`;

export const NOTIFY_MANY_ITEM_INVALID = (index: number, type: string) =>
  `notifyMany(): item ${index} must be an object { channel, payload }, got ${type}.`;

export const HEALTH_DOWN_AFTER_INVALID = (given: string) =>
  `PglnHealthIndicator.isHealthy: downAfterMs must be a number >= 0 (ms; default 30000), got ${given}`;

export const HEALTH_NOT_LIVE = (state: string, notLiveForMs: number, downAfterMs: number, down: boolean) =>
  state === 'closed'
    ? 'the listener is closed: notifications are no longer received'
    : `the listener is ${state}, not live for ${notLiveForMs} ms` +
      (down ? ` (down after ${downAfterMs} ms): what it keeps in sync may be stale` : ` (down after ${downAfterMs} ms)`);

export const TEST_BUS_NOT_STARTED = (method: string) =>
  `PglnTestBus.${method}(): the instance has not started yet: call app.init() (or moduleRef.init()) first.`;

export const TEST_BUS_CLOSED = (method: string) => `PglnTestBus.${method}(): the instance was closed first.`;

export const CHANNEL_NAME_CASE = (name: string) =>
  `Channel "${name}" has upper-case letters. Channel names are case-sensitive, and SQL folds unquoted names to ` +
  `lower case: NOTIFY ${name} (or LISTEN) in SQL means "${name.toLowerCase()}", which this channel does not hear; ` +
  `quote it (NOTIFY "${name}") or use pg_notify('${name}', ...).`;

export const HOST_NOT_QUALIFIED = (host: string, reason: string, attrs: string) =>
  `${host}: ${reason}, not target_session_attrs=${attrs}`;

export const NO_HOST_QUALIFIES = (attrs: string, failures: readonly string[]) =>
  `no host answered as target_session_attrs=${attrs} asks: ${failures.join('; ')}`;

export const HOSTS_INVALID = (got: string) =>
  `hosts must be a non-empty array of { host: string, port?: number }, got ${got}`;

export const TARGET_SESSION_ATTRS_INVALID = (where: string, got: string, allowed: readonly string[]) =>
  `${where} must be one of ${allowed.map((value) => `'${value}'`).join(', ')}, got ${got}` +
  (['read-only', 'standby', 'prefer-standby'].includes(got.replace(/^'|'$/g, ''))
    ? ': LISTEN and NOTIFY are refused on a standby, so the module never connects to one on purpose'
    : '');

export const ANY_WITH_SEVERAL_HOSTS = () =>
  "targetSessionAttrs (or target_session_attrs) 'any' cannot go with several hosts: it could keep a standby, which " +
  "refuses LISTEN and NOTIFY; use 'primary' (the default with several hosts) or 'read-write'";

export const LISTENER_HOST_WITH_HOSTS = () =>
  'listener.host or listener.port cannot go with hosts or a multi-host connectionString: the LISTEN connection chooses ' +
  'among those hosts; give its own hosts as listener.connectionString (a multi-host URL) instead';

export const SPARE_TAKES_OVER = () => 'LISTEN connection lost: listening on the spare connection';

export const SPARE_SILENT = (ms: number) => `it did not answer its LISTEN within ${ms} ms (a few of its round trips)`;

export const SPARE_FAILED = (reason: string) => `The spare connection failed when used (${reason}); connecting anew`;

export const RESYNC_SLOT_WAITING = (concurrency: number) =>
  `Out-of-sync handlers wait for one of the fleet's ${concurrency} resync slot(s) (resync.concurrency); their notifications stay held`;

export const RESYNC_SLOT_GIVEN_UP = (slot: number, holdMs: number) =>
  `Resync slot ${slot} given up after resync.holdMs (${holdMs} ms): its out-of-sync handler still runs, another instance may start its own`;

export const RESYNC_SLOT_FAILED = (reason: string) =>
  `The resync slot connection failed (${reason}); its slots are given up, and it reconnects when a run needs one`;

export const RESYNC_SLOTS_UNREACHABLE = (holdMs: number, reason: string) =>
  `No resync slot could be asked for during resync.holdMs (${holdMs} ms): ${reason}. The waiting out-of-sync handlers ` +
  'run without one; later runs wait for a slot again';

export const RESYNC_SLOTS_LOST = (slots: readonly number[], reason: string) =>
  `Resync slot(s) ${slots.join(', ')} given up: their connection was lost (${reason}); the server released them`;

export const LARGE_PAYLOAD_MISSING = (id: string, table: string, retentionMs: number, otherChannel?: string) =>
  otherChannel === undefined
    ? `row ${id} of ${table} is gone (rows are deleted after largePayloads.retentionMs, ${retentionMs} ms, or were deleted by hand)`
    : `row ${id} of ${table} is a payload of channel ${preview(otherChannel)}, not this one's (a reference sent by hand?)`;

export const LARGE_PAYLOAD_LOST = (channel: string, count: number, id: string, reason: string) =>
  `Channel ${preview(channel)}: ${count === 1 ? 'the large payload of a notification' : `the large payloads of ${count} notifications in a row`} ` +
  `(reference ${id}${count === 1 ? '' : ' first'}) could not be fetched: ${reason}. ` +
  `Not delivered; a subscriber with an out-of-sync handler reads again (reason 'overflow') to cover ${count === 1 ? 'it' : 'them'}.`;

export const ARRIVALS_OVERFLOW = (channel: string, dropped: number, limit: number) =>
  `Channel ${preview(channel)}: ${dropped} notifications were held behind the fetch of a large payload, more than ` +
  `maxQueuedNotifications (${limit}); dropped them. Subscribers with an out-of-sync handler read again (reason 'overflow').`;

export const LARGE_PAYLOADS_NO_TABLE = (table: string, reason: string, ddl: string) =>
  `largePayloads: the table ${table} does not exist and could not be created (${reason}). ` +
  `Create it yourself (a migration), or grant CREATE on its schema:\n${ddl}`;

export const LARGE_PAYLOADS_CLEANUP_FAILED = (table: string, reason: string, denied: boolean) =>
  `largePayloads: deleting expired rows of ${table} failed (${reason}); ` +
  (denied ? 'this instance stops trying: grant DELETE and SELECT on it to a role of the fleet that runs the module' : 'the next round tries again');

export const POOL_CONNECTION_RETIRED = (host: string, why: string) =>
  `Closed a pooled connection to ${host}: ${why}. A query in flight on it fails; the pool opens a new connection ` +
  'where it now sends.';

export const POOL_MOVED_WHILE_CONNECTING = (host: string, now: string) =>
  `A pooled connection to ${host} was closed as soon as it opened: the pool moved to ${now} meanwhile. Retry on a new connection.`;

export const POOL_OPTIONS_INVALID = (problems: string[]) =>
  `Invalid createMultiHostPool config:\n  - ${problems.join('\n  - ')}`;

export const POOL_HOST_WITH_HOSTS = () =>
  'host or port cannot go with hosts or a multi-host connectionString: the pool chooses among those hosts';
