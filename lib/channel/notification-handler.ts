import { PglnPayloadError } from '../errors/index.js';
import type { PglnNotification } from '../interfaces/index.js';
import { PAYLOAD_NOT_JSON } from '../pgln.messages.js';
import { isPromiseLike } from '../pgln.promises.js';
import { validatePayload } from '../pgln.schema.js';
import type { SubscriptionSpec } from '../pgln.subscription.js';
import type { ChannelContext } from './channel-context.js';
import { unwrap } from './exactly-once.js';
import type { Reporting } from './reporting.js';

/** What a call resolves with when its payload failed an asynchronous schema, or the subscriber went meanwhile: the handler was not called. */
export const NOT_CALLED = Symbol('not called');

/** A notification handler's registration. */
export type NotificationSpec = SubscriptionSpec & Required<Pick<SubscriptionSpec, 'onNotification'>>;

/**
 * One notification handler, and how its payload is prepared: parsed as JSON (`json: true`, or a
 * defined channel), taken out of the exactly-once envelope, validated by the channel's schema; and
 * called inside its span when telemetry is on. A call never throws: failures and rejected payloads
 * are counted, logged and given to `onError`.
 */
export class NotificationHandler {
  constructor(
    readonly spec: NotificationSpec,
    private readonly channel: string,
    private readonly context: ChannelContext,
    private readonly reporting: Reporting,
  ) {}

  get name(): string {
    return this.spec.name;
  }

  /**
   * Calls the handler; returns its promise if it returned one (or if the schema validates
   * asynchronously). `active` is asked again after an asynchronous validation, so that nothing is
   * called once its subscriber is removed.
   */
  call(notification: PglnNotification, subscriber: { readonly active: boolean }): PromiseLike<unknown> | undefined {
    const { spec } = this;
    this.context.turns.note(spec.name, this.channel);
    let payload: unknown = notification.payload;
    if (spec.json) {
      try {
        payload = JSON.parse(notification.payload);
      } catch (cause) {
        const message = PAYLOAD_NOT_JSON(this.channel, (cause as Error).message);
        this.reporting.rejected(spec.name, spec.onError, new PglnPayloadError(message, this.channel, { cause }));
        return undefined;
      }
      if (spec.exactlyOnce) {
        const unwrapped = unwrap(payload);
        if (unwrapped.xid === undefined) this.reporting.count('withoutTransactionId');
        payload = unwrapped.payload;
      }
    }
    try {
      if (spec.schema) {
        payload = validatePayload(spec.schema, this.channel, payload, 'Payload received on');
        if (isPromiseLike(payload)) return this.callValidated(notification, payload, subscriber);
      }
    } catch (error) {
      this.reporting.rejected(spec.name, spec.onError, error as PglnPayloadError);
      return undefined;
    }
    try {
      const result = this.invoke(payload, notification);
      if (isPromiseLike(result)) return result;
      this.reporting.delivered();
    } catch (error) {
      this.reporting.failed(spec.name, spec.onError, error);
    }
    return undefined;
  }

  /** Counts a call whose promise settled: fulfilled (unless not called), or rejected. */
  settled(result: unknown): void {
    if (result !== NOT_CALLED) this.reporting.delivered();
  }

  failed(error: unknown): void {
    this.reporting.failed(this.spec.name, this.spec.onError, error);
  }

  /** {@link call} for a schema that validates asynchronously. */
  private async callValidated(notification: PglnNotification, validated: PromiseLike<unknown>, subscriber: { readonly active: boolean }): Promise<unknown> {
    let payload: unknown;
    try {
      payload = await validated;
    } catch (error) {
      this.reporting.rejected(this.spec.name, this.spec.onError, error as PglnPayloadError);
      return NOT_CALLED;
    }
    // Removed while it validated: off() or unlisten() has resolved, so the handler must not run.
    if (!subscriber.active) return NOT_CALLED;
    return this.invoke(payload, notification);
  }

  private invoke(payload: unknown, notification: PglnNotification): unknown {
    const { telemetry } = this.context;
    return telemetry ? telemetry.notification(this.channel, this.spec, payload, notification) : this.spec.onNotification(payload, notification);
  }
}
