import type { PglnChannel, PglnNotification } from '../interfaces/index.js';
import { ON_NOTIFICATION_METADATA } from '../pgln.constants.js';
import { isChannelDefinition } from '../pgln.define-channel.js';
import { assertChannel } from '../pgln.validation.js';
import {
  connectionOption,
  prependMetadata,
  type OnNotificationMetadata,
  type PglnHandlerOptions,
  type TypedMethodDecorator,
} from './pgln-metadata.js';

/** Options of {@link OnNotification} for a channel given by name. */
export interface OnNotificationOptions extends PglnHandlerOptions {
  /**
   * Parse the payload as JSON and pass the value instead of the raw text. A payload that is not
   * valid JSON is logged as an error and skipped; delivery goes on. (Always on for a channel
   * defined with `defineChannel`.)
   * @default false
   */
  json?: boolean;
}

/**
 * Calls the decorated provider or controller method for every notification on `channel`, as
 * `method(payload, notification)`, one at a time and in arrival order; a returned promise is
 * awaited before the provider's next notification. While the provider's out-of-sync handler runs,
 * notifications are held and delivered after it (none that arrived before it began: it saw those).
 *
 * Given a channel defined with `defineChannel`, the payload is parsed JSON (validated by the
 * channel's schema, if any) and the method's signature is type-checked against it.
 *
 * A method may carry several `@OnNotification` decorators, and several methods may share a
 * channel (they run in discovery order).
 *
 * @param channel a definition, or the channel name exactly as sent (case and spaces kept; at most 63 bytes in UTF-8)
 * @param options `connection`: the instance to bind to (several databases); `json` for a channel given by name
 * @throws PglnChannelError at class definition when the channel name cannot be LISTENed intact
 */
export function OnNotification<TPayload>(
  channel: PglnChannel<TPayload, any>,
  options?: PglnHandlerOptions,
): TypedMethodDecorator<(payload: TPayload, notification: PglnNotification) => unknown>;
export function OnNotification(channel: string, options?: OnNotificationOptions): MethodDecorator;
export function OnNotification(channel: string | PglnChannel, options: OnNotificationOptions = {}): MethodDecorator {
  if (isChannelDefinition(channel)) {
    const connection = connectionOption(channel.name, options);
    return prependMetadata<OnNotificationMetadata>(ON_NOTIFICATION_METADATA, {
      channel: channel.name,
      connection,
      json: true,
      schema: channel.schema,
      exactlyOnce: channel.exactlyOnce,
    });
  }
  assertChannel(channel);
  const connection = connectionOption(channel, options);
  return prependMetadata<OnNotificationMetadata>(ON_NOTIFICATION_METADATA, { channel, connection, json: options.json ?? false });
}
