import { MAX_CHANNEL_BYTES, MAX_PAYLOAD_BYTES } from './pgln.constants.js';
import { PglnChannelError, PglnPayloadError } from './errors/index.js';
import {
  CHANNEL_EMPTY,
  CHANNEL_HAS_NUL,
  CHANNEL_NOT_STRING,
  CHANNEL_NOT_WELL_FORMED,
  CHANNEL_TOO_LONG,
  PAYLOAD_HAS_NUL,
  PAYLOAD_NOT_SERIALIZABLE,
  PAYLOAD_NOT_WELL_FORMED,
  PAYLOAD_TOO_LARGE,
} from './pgln.messages.js';

/**
 * Throws a {@link PglnChannelError} unless `channel` is a name PostgreSQL keeps exactly:
 * a non-empty, well-formed string of at most 63 bytes in UTF-8 without NUL.
 */
export function assertChannel(channel: unknown): asserts channel is string {
  if (typeof channel !== 'string') {
    throw new PglnChannelError(CHANNEL_NOT_STRING(channel === null ? 'null' : typeof channel), channel);
  }
  if (channel.length === 0) throw new PglnChannelError(CHANNEL_EMPTY(), channel);
  // A JS string never takes fewer UTF-8 bytes than UTF-16 units, nor more than 3 per unit.
  if (channel.length * 3 > MAX_CHANNEL_BYTES) {
    const bytes = Buffer.byteLength(channel, 'utf8');
    if (bytes > MAX_CHANNEL_BYTES) throw new PglnChannelError(CHANNEL_TOO_LONG(channel, bytes), channel);
  }
  if (channel.includes('\0')) throw new PglnChannelError(CHANNEL_HAS_NUL(channel), channel);
  if (!channel.isWellFormed()) throw new PglnChannelError(CHANNEL_NOT_WELL_FORMED(channel), channel);
}

/**
 * The size of `text` in UTF-8 when it and `reserved` bytes are over `maxBytes`; undefined when they
 * fit. Cheap bound first: a string of n UTF-16 units takes between n and 3n bytes in UTF-8.
 */
export function bytesOver(text: string, reserved: number, maxBytes: number): number | undefined {
  if (text.length * 3 + reserved <= maxBytes) return undefined;
  const bytes = Buffer.byteLength(text, 'utf8');
  return bytes + reserved > maxBytes ? bytes : undefined;
}

/**
 * Turns a notify payload into the text pg_notify receives: strings as they are, `undefined` as
 * the empty payload, anything else JSON-encoded (everything, with `json`: a defined channel's
 * payloads). Throws a {@link PglnPayloadError} when the result is 8000 bytes or more, holds a
 * NUL or a lone surrogate, or cannot be encoded. `reserved`: bytes the statement adds around the
 * payload (the exactly-once envelope), which count against the limit; `maxBytes`: the limit
 * (none, `Infinity`, when large payloads go through a table).
 */
export function encodePayload(channel: string, payload: unknown, json = false, reserved = 0, maxBytes = MAX_PAYLOAD_BYTES): string {
  let text: string | undefined;
  if (typeof payload === 'string' && !json) text = payload;
  else if (payload === undefined && !json) return '';
  else {
    try {
      text = JSON.stringify(payload);
    } catch (error) {
      throw new PglnPayloadError(PAYLOAD_NOT_SERIALIZABLE(channel, (error as Error).message), channel, {
        cause: error,
      });
    }
    if (text === undefined) {
      throw new PglnPayloadError(PAYLOAD_NOT_SERIALIZABLE(channel, `${typeof payload} has no JSON form`), channel);
    }
  }
  const bytes = bytesOver(text, reserved, maxBytes);
  if (bytes !== undefined) throw new PglnPayloadError(PAYLOAD_TOO_LARGE(channel, bytes, reserved), channel);
  if (text.includes('\0')) throw new PglnPayloadError(PAYLOAD_HAS_NUL(channel), channel);
  if (!text.isWellFormed()) throw new PglnPayloadError(PAYLOAD_NOT_WELL_FORMED(channel), channel);
  return text;
}
