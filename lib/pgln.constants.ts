/** Metadata key under which `@OnNotification` stores its registrations (an array). */
export const ON_NOTIFICATION_METADATA = 'pgln:on-notification';

/** Metadata key under which `@OnOutOfSync` stores its registrations (an array). */
export const ON_OUT_OF_SYNC_METADATA = 'pgln:on-out-of-sync';

/** PostgreSQL's NAMEDATALEN - 1: the longest identifier, in bytes, that LISTEN keeps intact. */
export const MAX_CHANNEL_BYTES = 63;

/** pg_notify rejects payloads of 8000 bytes or more (in the server encoding). */
export const MAX_PAYLOAD_BYTES = 7999;

/** The name of the instance `PglnModule.forRoot()` creates when given no `name`. */
export const DEFAULT_CONNECTION = 'default';

/** Provider token of an instance's name, one per `PglnModule.forRoot()`. */
export const PGLN_CONNECTION_NAME = Symbol('PGLN_CONNECTION_NAME');
