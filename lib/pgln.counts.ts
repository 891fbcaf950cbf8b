import type { OutOfSyncReason, PglnCounts } from './interfaces/index.js';

/** The mutable counters behind {@link PglnCounts}: plain increments, cheap enough for the hot path. */
export class Counts implements PglnCounts {
  received = 0;
  delivered = 0;
  handlerFailures = 0;
  invalidPayloads = 0;
  dropped = 0;
  skippedBySnapshot = 0;
  withoutTransactionId = 0;
  readonly resyncs: Record<OutOfSyncReason, number> = { connect: 0, reconnect: 0, listen: 0, overflow: 0, manual: 0 };

  /** A copy that later counting does not change. */
  snapshot(): PglnCounts {
    const { received, delivered, handlerFailures, invalidPayloads, dropped, skippedBySnapshot, withoutTransactionId } = this;
    return {
      received,
      delivered,
      handlerFailures,
      invalidPayloads,
      dropped,
      skippedBySnapshot,
      withoutTransactionId,
      resyncs: { ...this.resyncs },
    };
  }
}
