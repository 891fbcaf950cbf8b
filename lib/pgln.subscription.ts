import type { StandardSchemaV1 } from '@standard-schema/spec';
import type { PglnHandlerError, PglnOverflowError, PglnPayloadError, PglnPayloadLostError } from './errors/index.js';
import type { OutOfSyncEvent, PglnNotification } from './interfaces/index.js';

/**
 * What a registration brings (a decorated method, or a `listen()` call): handlers and how to call
 * them. The registrations of one owner on one channel make one subscriber (see `lib/channel/`).
 */
export interface SubscriptionSpec {
  /** How logs and errors name the handler: `Class.method`, or `listen(channel)`. */
  readonly name: string;
  /**
   * Who keeps the state the handlers maintain: the provider instance of decorated methods, or the
   * `listen()` call. An out-of-sync handler rebuilds the state of its owner only.
   */
  readonly owner: object;
  readonly onNotification?: (payload: any, notification: PglnNotification) => unknown;
  readonly onOutOfSync?: (event: OutOfSyncEvent) => unknown;
  readonly onError?: (error: PglnHandlerError | PglnOverflowError | PglnPayloadError | PglnPayloadLostError) => void;
  readonly json?: boolean;
  /** Validates each (JSON) payload before `onNotification` gets it: a channel defined with a schema. */
  readonly schema?: StandardSchemaV1;
  /** Payloads come in the exactly-once envelope, with the sending transaction's id: a channel defined `exactlyOnce`. */
  readonly exactlyOnce?: boolean;
}
