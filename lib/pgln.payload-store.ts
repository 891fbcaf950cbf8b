import { createHash } from 'node:crypto';
import type { Logger } from '@nestjs/common';
import { PglnError, PglnTimeoutError } from './errors/index.js';
import { describeError } from './pgln.connection-errors.js';
import { cleanupSql, createSql, existsSql, fetchSql, tableDdl } from './pgln.large-payloads.js';
import { LARGE_PAYLOADS_CLEANUP_FAILED, LARGE_PAYLOADS_NO_TABLE, LARGE_PAYLOAD_MISSING, NO_ANSWER } from './pgln.messages.js';
import { withTimeout } from './pgln.promises.js';

/** A statement through the module's pool (or the application's), as the transport runs it. */
export type PoolQuery = (text: string, values?: unknown[]) => Promise<{ rows: any[] }>;

/** The most references one fetch asks for. */
const BATCH = 256;
/**
 * About the most payload bytes one fetch brings: rows past it (in id order) stay for the next
 * fetch, so that many 10 MB payloads never become one huge result. The first row always comes.
 */
const BATCH_BYTES = 16 * 1024 * 1024;

/** The row a reference named is gone: deleted by the cleanup (`retentionMs` passed) or by hand. */
export class PayloadMissingError extends PglnError {}

/** How often expired rows are deleted: half the retention, within 100 ms and 60 s. */
export function cleanupIntervalMs(retentionMs: number): number {
  return Math.min(Math.max(retentionMs / 2, 100), 60_000);
}

/**
 * The receiving side of `largePayloads`: makes sure the table is there, fetches the payloads that
 * references name, and deletes expired rows.
 *
 * Fetches are batched: the references that arrive while one fetch runs (or in one turn of the event
 * loop, as notifications of one network read do) go in the next, one statement for up to
 * {@link BATCH} rows. Each fetch is bounded by `timeoutMs`; a failed fetch fails every reference
 * in it, and a row that is not there fails its own with a {@link PayloadMissingError}: the channel
 * then reads again (see `Arrivals`). The cleanup runs on every instance but deletes on one at a
 * time (a try-lock taken by its statement): the others skip that round.
 */
export class PayloadStore {
  private waiting = new Map<string, { resolve: (payload: string) => void; reject: (error: Error) => void }[]>();
  private fetching = false;
  private cleanup?: NodeJS.Timeout;
  private readonly key: bigint;

  constructor(
    private readonly query: PoolQuery,
    private readonly table: string,
    private readonly retentionMs: number,
    private readonly timeoutMs: number,
    private readonly logger: Logger,
  ) {
    this.key = createHash('sha256').update(`pgln-payloads:${table}`).digest().readBigInt64BE(0);
  }

  /**
   * Creates the table if it is missing (instances starting together wait for each other), then
   * deletes expired rows every {@link cleanupIntervalMs}. Rejects, with the DDL to run, when the
   * table is missing and cannot be created.
   */
  async prepare(): Promise<void> {
    const { rows } = await this.bounded(existsSql, [this.table]);
    if (!rows[0]?.exists) {
      try {
        await this.bounded(createSql(this.table, this.key));
      } catch (error) {
        throw new PglnError(LARGE_PAYLOADS_NO_TABLE(this.table, describeError(error), tableDdl(this.table)), { cause: error });
      }
    }
    const interval = cleanupIntervalMs(this.retentionMs);
    this.cleanup = setInterval(() => void this.deleteExpired(), interval).unref();
  }

  /** Stops the cleanup, and fails the fetches not started (shutdown). */
  close(): void {
    clearInterval(this.cleanup);
    const waiting = this.waiting;
    this.waiting = new Map();
    for (const callers of waiting.values()) for (const caller of callers) caller.reject(new Error('closed'));
  }

  /** The payload of row `id`; rejects if the row is gone or the fetch fails. */
  fetch(id: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const callers = this.waiting.get(id);
      if (callers) callers.push({ resolve, reject });
      else this.waiting.set(id, [{ resolve, reject }]);
      if (!this.fetching) {
        this.fetching = true;
        setImmediate(() => void this.drain());
      }
    });
  }

  /** Deletes expired rows, unless another instance is at it; a failure is logged, and the next round tries again. */
  async deleteExpired(): Promise<void> {
    try {
      await this.bounded(cleanupSql(this.table), [this.key.toString(), this.retentionMs]);
    } catch (error) {
      this.logger.warn(LARGE_PAYLOADS_CLEANUP_FAILED(this.table, describeError(error)));
    }
  }

  /** Fetches in batches until no reference waits. */
  private async drain(): Promise<void> {
    while (this.waiting.size > 0) {
      const batch = [...this.waiting].slice(0, BATCH);
      for (const [id] of batch) this.waiting.delete(id);
      try {
        const { rows } = await this.bounded(fetchSql(this.table), [batch.map(([id]) => id), BATCH_BYTES]);
        const found = new Map<string, string | null>(rows.map((row: { id: string; payload: string | null }) => [row.id, row.payload]));
        for (const [id, callers] of batch) {
          const payload = found.get(id);
          // There, but past this fetch's byte budget: it waits for the next one.
          if (payload === null) {
            this.waiting.set(id, [...callers, ...(this.waiting.get(id) ?? [])]);
            continue;
          }
          const missing = payload === undefined ? new PayloadMissingError(LARGE_PAYLOAD_MISSING(id, this.table, this.retentionMs)) : undefined;
          for (const caller of callers) missing ? caller.reject(missing) : caller.resolve(payload!);
        }
      } catch (error) {
        for (const [, callers] of batch) for (const caller of callers) caller.reject(error as Error);
      }
    }
    this.fetching = false;
  }

  private bounded(text: string, values?: unknown[]): Promise<{ rows: any[] }> {
    return withTimeout(this.query(text, values), this.timeoutMs, () => new PglnTimeoutError(NO_ANSWER(`A query on ${this.table}`, this.timeoutMs)));
  }
}
