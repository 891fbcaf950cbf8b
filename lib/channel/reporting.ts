import { PglnHandlerError, type PglnOverflowError, type PglnPayloadError, type PglnPayloadLostError } from '../errors/index.js';
import type { OutOfSyncReason } from '../interfaces/index.js';
import type { Counts } from '../pgln.counts.js';
import { HANDLER_FAILED } from '../pgln.messages.js';
import type { SubscriptionSpec } from '../pgln.subscription.js';
import type { ChannelContext } from './channel-context.js';

/** A channel's counts that its subscribers add to (the instance's totals too). */
type Counted = 'dropped' | 'handlerFailures' | 'invalidPayloads' | 'skippedBySnapshot' | 'withoutTransactionId';

/** Where a subscriber's errors go: `onError` of a `listen()`, if it gave one. */
export type ErrorSink = SubscriptionSpec['onError'];

/**
 * Counting and error reporting for one channel: what happened is counted on the channel and in the
 * instance's totals, failures are logged with handler, channel and stack, and given to `onError`.
 */
export class Reporting {
  constructor(
    private readonly channel: string,
    private readonly counts: Counts,
    private readonly context: ChannelContext,
  ) {}

  count(key: Counted, by = 1): void {
    this.counts[key] += by;
    this.context.totals[key] += by;
  }

  /** A notification handler call completed: the hot path's count, a plain increment of each. */
  delivered(): void {
    this.counts.delivered++;
    this.context.totals.delivered++;
  }

  /** An out-of-sync handler run completed. */
  countResync(reason: OutOfSyncReason): void {
    this.counts.resyncs[reason]++;
    this.context.totals.resyncs[reason]++;
  }

  /** A handler threw or rejected: logged with its stack, counted, given to `onError`. */
  failed(handler: string, onError: ErrorSink, cause: unknown, what?: string): void {
    this.count('handlerFailures');
    const message = HANDLER_FAILED(handler, this.channel) + (what ? ` (${what})` : '');
    const error = new PglnHandlerError(message, this.channel, handler, { cause });
    const detail = cause instanceof Error ? (cause.stack ?? cause.message) : String(cause);
    this.context.logger.error(`${message}: ${detail}`);
    this.report(handler, onError, error);
  }

  /** A payload that is not JSON, or fails the channel's schema: logged (naming the handler), counted, reported, skipped. */
  rejected(handler: string, onError: ErrorSink, error: PglnPayloadError): void {
    this.count('invalidPayloads');
    this.context.logger.error(`${error.message} (skipped for ${handler})`);
    this.report(handler, onError, error);
  }

  /** Tells `onError`, which must not break delivery if it throws. */
  report(handler: string, onError: ErrorSink, error: PglnHandlerError | PglnOverflowError | PglnPayloadError | PglnPayloadLostError): void {
    try {
      onError?.(error);
    } catch (secondary) {
      this.context.logger.error(`onError of ${handler} threw: ${(secondary as Error)?.stack ?? secondary}`);
    }
  }
}
