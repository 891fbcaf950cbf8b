import { PglnError, PglnPayloadError } from './errors/index.js';
import type {
  PglnChannel,
  PglnExecutor,
  PglnNotifyManyQuery,
  PglnNotifyOptions,
  PglnNotifyQuery,
  PglnOutgoingNotification,
  PglnQueryable,
} from './interfaces/index.js';
import { channelName, isChannelDefinition } from './pgln.define-channel.js';
import { EXECUTOR_INVALID, NOTIFY_MANY_ITEM_INVALID, NOTIFY_MANY_NOT_ARRAY, SCHEMA_ASYNC } from './pgln.messages.js';
import { isPromiseLike } from './pgln.promises.js';
import { validatePayload } from './pgln.schema.js';
import { encodePayload } from './pgln.validation.js';
import { ENVELOPE_BYTES, envelope } from './channel/exactly-once.js';
import { goesByTable, largeNotifyManySql, largeNotifySql } from './pgln.large-payloads.js';

export const NOTIFY_SQL = 'SELECT pg_notify($1, $2)';
/** For an exactly-once channel: the server wraps the payload with the sending transaction's id. */
export const NOTIFY_ONCE_SQL = `SELECT pg_notify($1, ${envelope('$2')})`;
// unnest keeps the order of the arrays, so the notifications are queued (and delivered) in order.
export const NOTIFY_MANY_SQL =
  'SELECT pg_notify(n.channel, n.payload) FROM unnest($1::text[], $2::text[]) AS n(channel, payload)';
/** With at least one exactly-once channel among them: those are wrapped, the others sent as they are. */
export const NOTIFY_MANY_ONCE_SQL =
  `SELECT pg_notify(n.channel, CASE WHEN n.once THEN ${envelope('n.payload')} ELSE n.payload END) ` +
  'FROM unnest($1::text[], $2::text[], $3::boolean[]) AS n(channel, payload, once)';

/**
 * A channel name, the payload text, whether the exactly-once envelope wraps it, and the table it
 * goes through when it is too large for pg_notify (`largePayloads`).
 */
export type Encoded = [name: string, text: string, once: boolean, table?: string];

/**
 * Validates and encodes one notification: plain names as `encodePayload` says, definitions as
 * JSON that passed their schema. With a `table` (`largePayloads`), a payload of any size is
 * accepted, and one too large for pg_notify goes through that table. A promise only when that
 * schema validates asynchronously.
 */
export function encodeNotification(channel: string | PglnChannel, payload: unknown, table?: string): Encoded | Promise<Encoded> {
  const name = channelName(channel);
  const maxBytes = table ? Infinity : undefined;
  if (!isChannelDefinition(channel)) return byTable([name, encodePayload(name, payload, false, 0, maxBytes), false], table);
  const once = channel.exactlyOnce === true;
  const encoded = byTable([name, encodePayload(name, payload, true, once ? ENVELOPE_BYTES : 0, maxBytes), once], table);
  if (!channel.schema) return encoded;
  // The schema checks what receivers will parse (a Date, say, arrives as a string), not the value given.
  const checked = validatePayload(channel.schema, name, JSON.parse(encoded[1]), 'Payload for');
  return isPromiseLike(checked) ? Promise.resolve(checked).then(() => encoded) : encoded;
}

/** Marks a notification whose payload must go through `table`: too large, or shaped like a reference. */
function byTable(encoded: Encoded, table: string | undefined): Encoded {
  if (table && goesByTable(encoded[1], encoded[2] ? ENVELOPE_BYTES : 0)) encoded[3] = table;
  return encoded;
}

/**
 * Every item of a `notifyMany`, validated and encoded (see {@link encodeNotification}); a promise
 * only when a schema validates asynchronously. It fails with the error of the first invalid item.
 */
export function encodeNotifications(items: readonly PglnOutgoingNotification[], table?: string): Encoded[] | Promise<Encoded[]> {
  if (!Array.isArray(items)) throw new PglnError(NOTIFY_MANY_NOT_ARRAY(typeof items));
  const encoded: (Encoded | Promise<Encoded>)[] = [];
  try {
    for (const [index, item] of items.entries()) {
      if (item === null || typeof item !== 'object') throw new PglnError(NOTIFY_MANY_ITEM_INVALID(index, item === null ? 'null' : typeof item));
      encoded.push(encodeNotification(item.channel, item.payload, table));
    }
  } catch (error) {
    // An earlier item's asynchronous validation is not wanted any more: keep its rejection handled.
    for (const item of encoded) if (isPromiseLike(item)) item.then(undefined, () => undefined);
    throw error;
  }
  if (!encoded.some(isPromiseLike)) return encoded as Encoded[];
  return Promise.allSettled(encoded).then((results) => {
    const failed = results.find((result) => result.status === 'rejected');
    if (failed) throw failed.reason;
    return results.map((result) => (result as PromiseFulfilledResult<Encoded>).value);
  });
}

/** How a single notification's statement wraps an exactly-once payload, whether it goes through a table or not. */
const ONCE_PAYLOAD = envelope('$2');

/** The statement that sends one notification (its payload written to the table first, when it goes through one). */
export function toNotifyQuery([name, text, once, table]: Encoded): PglnNotifyQuery {
  if (table) return { text: largeNotifySql(table, once), values: [name, text] };
  return { text: once ? NOTIFY_ONCE_SQL : NOTIFY_SQL, values: [name, text] };
}

/** The statement that sends many notifications, in order (with those through a table, a fourth array says which). */
export function toNotifyManyQuery(encoded: readonly Encoded[]): PglnNotifyManyQuery {
  const names = encoded.map(([name]) => name);
  const texts = encoded.map(([, text]) => text);
  const onces = () => encoded.map(([, , once]) => once);
  const table = encoded.find((item) => item[3])?.[3];
  if (table) return { text: largeNotifyManySql(table), values: [names, texts, onces(), encoded.map((item) => item[3] !== undefined)] };
  if (!encoded.some(([, , once]) => once)) return { text: NOTIFY_MANY_SQL, values: [names, texts] };
  return { text: NOTIFY_MANY_ONCE_SQL, values: [names, texts, onces()] };
}

/** For the synchronous query builders: an asynchronous schema cannot be waited for there. */
export function synchronously<T>(result: T | Promise<T>, channel: string): T {
  if (!isPromiseLike(result)) return result;
  result.then(undefined, () => undefined); // its outcome is not wanted: keep a rejection handled
  throw new PglnPayloadError(SCHEMA_ASYNC(channel), channel);
}

/** The executor of `options`, checked before anything is sent. */
export function checkExecutor(options: PglnNotifyOptions | undefined): PglnExecutor | undefined {
  const executor = options?.executor;
  if (executor === undefined || typeof executor === 'function' || typeof (executor as PglnQueryable | null)?.query === 'function') {
    return executor;
  }
  throw new PglnError(EXECUTOR_INVALID(executor === null ? 'null' : typeof executor));
}

/** Runs a notify statement through a caller's executor. */
export async function run(executor: PglnExecutor, { text, values }: PglnNotifyQuery | PglnNotifyManyQuery): Promise<void> {
  if (typeof executor === 'function') await executor(text, values);
  else await executor.query(text, values);
}

/** Names the channels of a batch for an error about it. */
export function describeChannels(notifications: readonly PglnOutgoingNotification[]): string {
  const names = new Set<string>();
  for (const item of Array.isArray(notifications) ? notifications : []) {
    // Any value may be there: the items are checked after this, when they are encoded.
    const channel = (item as Partial<PglnOutgoingNotification> | null)?.channel;
    const name: unknown = typeof channel === 'string' ? channel : channel?.name;
    if (typeof name === 'string') names.add(name);
  }
  return [...names].join(', ');
}

/**
 * What a notify statement built here sends, in order: each channel, its payload text, and
 * whether the server would wrap it in the exactly-once envelope (for the in-memory bus).
 */
export function notificationsOf({ text, values }: PglnNotifyQuery | PglnNotifyManyQuery): { channel: string; payload: string; once: boolean }[] {
  if (!Array.isArray(values[0])) {
    // One notification: its payload as it is, whether it goes through a table or not.
    const [channel, payload] = values as [string, string];
    return [{ channel, payload, once: text.includes(ONCE_PAYLOAD) }];
  }
  const [names, texts, onces] = values as [string[], string[], boolean[]?];
  return names.map((channel, index) => ({ channel, payload: texts[index], once: onces?.[index] ?? false }));
}
