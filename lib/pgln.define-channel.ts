import type { StandardSchemaV1 } from '@standard-schema/spec';
import { PglnError } from './errors/index.js';
import type { PglnChannel } from './interfaces/index.js';
import { EXACTLY_ONCE_NOT_BOOLEAN, SCHEMA_NOT_STANDARD } from './pgln.messages.js';
import { assertChannel } from './pgln.validation.js';

/**
 * Defines a channel whose payloads are JSON of type `TPayload`:
 *
 * ```ts
 * export const Products = defineChannel<ProductChange>('products');
 * export const Products = defineChannel('products', { schema: productChange }); // type inferred, validated both ways
 * ```
 *
 * With a schema (any Standard Schema v1: zod 4, valibot, arktype, ...), `notify` rejects a payload
 * that fails it with a `PglnPayloadError` naming the issues, before sending anything; a received
 * payload that fails it is logged, reported to `onError` and skipped. The schema checks the JSON
 * that is sent, as receivers will parse it (a `Date` is a string there); the payload is sent as
 * given, not as the schema's output.
 *
 * With `exactlyOnce: true`, every notification also carries the id of the transaction that sent it
 * (added by the server in the sending statement), so that a subscriber whose reload recorded its
 * snapshot (`OutOfSyncEvent.snapshot`) skips what that reload already read: each change is applied
 * once. The envelope takes 40 bytes of the payload limit.
 *
 * @throws PglnChannelError when the name cannot be LISTENed intact
 * @throws PglnError when `schema` is not a Standard Schema
 */
export function defineChannel<TPayload>(name: string, options?: { exactlyOnce?: boolean }): PglnChannel<TPayload>;
export function defineChannel<TSchema extends StandardSchemaV1>(
  name: string,
  options: { schema: TSchema; exactlyOnce?: boolean },
): PglnChannel<StandardSchemaV1.InferOutput<TSchema>, StandardSchemaV1.InferInput<TSchema>>;
/** With a schema that must produce an existing type: `defineChannel<ProductChange>('products', { schema })`. */
export function defineChannel<TPayload>(
  name: string,
  options: { schema: StandardSchemaV1<unknown, TPayload>; exactlyOnce?: boolean },
): PglnChannel<TPayload>;
export function defineChannel(name: string, options?: { schema?: StandardSchemaV1; exactlyOnce?: boolean }): PglnChannel {
  assertChannel(name);
  const schema = options?.schema;
  if (schema !== undefined && typeof schema?.['~standard']?.validate !== 'function') {
    throw new PglnError(SCHEMA_NOT_STANDARD(name));
  }
  const exactlyOnce = options?.exactlyOnce ?? false;
  if (typeof exactlyOnce !== 'boolean') throw new PglnError(EXACTLY_ONCE_NOT_BOOLEAN(name, typeof exactlyOnce));
  return Object.freeze({ name, schema, exactlyOnce });
}

/** Whether `channel` is a definition rather than a plain name. */
export function isChannelDefinition(channel: unknown): channel is PglnChannel {
  return typeof channel === 'object' && channel !== null && typeof (channel as PglnChannel).name === 'string';
}

/** The name of a channel given by name or definition, checked. */
export function channelName(channel: string | PglnChannel): string {
  const name = isChannelDefinition(channel) ? channel.name : channel;
  assertChannel(name);
  return name;
}
