import type { OutOfSyncEvent, PglnChannel } from '../interfaces/index.js';
import { ON_OUT_OF_SYNC_METADATA } from '../pgln.constants.js';
import { channelName } from '../pgln.define-channel.js';
import {
  connectionOption,
  prependMetadata,
  type OnOutOfSyncMetadata,
  type PglnHandlerOptions,
  type TypedMethodDecorator,
} from './pgln-metadata.js';

/**
 * Calls the decorated provider or controller method, as `method({ channel, reason })`, whenever
 * the application may have missed notifications on `channel` and must rebuild its state from the
 * database: at bootstrap (reason `'connect'`; `app.init()` waits for it), after every reconnect
 * (reason `'reconnect'`), after its queue overflowed and was dropped (reason `'overflow'`), and
 * when `PglnService.resync()` asks (reason `'manual'`). LISTEN is already active when it runs:
 * notifications that arrive meanwhile are held for its provider and delivered after it resolves,
 * so nothing falls in the gap; those that arrived before it began are not delivered after it.
 * Its event's `snapshot(executor)` makes each change of an exactly-once channel count once.
 *
 * If it throws, the error is logged and it is retried with backoff; the provider's notifications
 * stay held until it succeeds.
 *
 * @param channel a definition, or the channel name exactly as sent (case and spaces kept; at most 63 bytes in UTF-8)
 * @param options `connection`: the instance to bind to, for an application with several databases
 * @throws PglnChannelError at class definition when the channel name cannot be LISTENed intact
 */
export function OnOutOfSync(
  channel: PglnChannel<any, any>,
  options?: PglnHandlerOptions,
): TypedMethodDecorator<(event: OutOfSyncEvent) => unknown>;
export function OnOutOfSync(channel: string, options?: PglnHandlerOptions): MethodDecorator;
export function OnOutOfSync(channel: string | PglnChannel, options?: PglnHandlerOptions): MethodDecorator {
  const name = channelName(channel);
  return prependMetadata<OnOutOfSyncMetadata>(ON_OUT_OF_SYNC_METADATA, { channel: name, connection: connectionOption(name, options) });
}
