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

export const CHANNEL_HAS_NUL = (channel: string) =>
  `Channel name ${preview(channel)} contains a NUL character, which PostgreSQL identifiers cannot hold.`;

export const PAYLOAD_TOO_LARGE = (channel: string, bytes: number) =>
  `Payload for channel ${preview(channel)} is ${bytes} bytes in UTF-8; pg_notify accepts at most ${MAX_PAYLOAD_BYTES} bytes. ` +
  'Send a key and let the receiver read the row instead.';

export const PAYLOAD_HAS_NUL = (channel: string) =>
  `Payload for channel ${preview(channel)} contains a NUL character, which PostgreSQL text cannot hold.`;

export const PAYLOAD_NOT_SERIALIZABLE = (channel: string, reason: string) =>
  `Payload for channel ${preview(channel)} cannot be encoded as JSON: ${reason}`;

export const PAYLOAD_NOT_JSON = (channel: string, reason: string) =>
  `Payload on channel ${preview(channel)} is not valid JSON (the handler asked for json: true): ${reason}`;

export const OPTIONS_INVALID = (problems: string[]) =>
  `Invalid PglnModule options:\n  - ${problems.join('\n  - ')}`;

export const CLOSED = (what: string) => `Cannot ${what}: the Pgln listener has been closed (the application is shutting down).`;

export const HANDLER_FAILED = (handler: string, channel: string) =>
  `${handler} failed on channel ${preview(channel)}`;

export const REQUEST_SCOPED_HANDLER = (handler: string, decorator: string) =>
  `${handler} is decorated with ${decorator} but its provider is request-scoped or transient; ` +
  'it is NOT registered. Move the handler to a singleton (default-scoped) provider.';

export const LISTEN_WITHOUT_HANDLER = (channel: string) =>
  `listen(${preview(channel)}) needs an onNotification or an onOutOfSync function.`;

export const POOL_CLIENT_ERROR = (message: string) =>
  `An idle connection of the notify pool failed (${message}); the pool replaces it on next use.`;
