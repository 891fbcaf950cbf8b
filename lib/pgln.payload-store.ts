import { createHash } from 'node:crypto';
import type { Logger } from '@nestjs/common';
import { PglnError, PglnTimeoutError } from './errors/index.js';
import { describeError } from './pgln.connection-errors.js';
import { cleanupSql, createSql, existsSql, fetchSql, quoted, tableDdl } from './pgln.large-payloads.js';
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

/** The row a reference named is gone (deleted by the cleanup, `retentionMs` passed, or by hand), or is another channel's. */
export class PayloadMissingError extends PglnError {}

/** How often expired rows are deleted: half the retention, and at least once a minute. */
function cleanupIntervalMs(retentionMs: number): number {
  return Math.min(retentionMs / 2, 60_000);
}

/** Someone waiting for a row: the channel its notification came on, which the row must be of. */
interface Waiting {
  readonly channel: string;
  readonly resolve: (payload: string) => void;
  readonly reject: (error: Error) => void;
}

/**
 * The receiving side of `largePayloads`: makes sure the table is there, fetches the payloads that
 * references name, and deletes expired rows.
 *
 * Fetches are batched: the references that arrive while one fetch runs (or in one turn of the event
 * loop, as notifications of one network read do) go in the next, one statement for up to
 * {@link BATCH} rows, oldest first. Each fetch is bounded by `timeoutMs`; a failed fetch fails every
 * reference in it, and a row that is not there, or is another channel's (any role may NOTIFY a
 * string that looks like a reference), fails its own with a {@link PayloadMissingError}: the
 * channel then reads again (see `Arrivals`). The cleanup runs on every instance; their DELETEs do
 * not overlap (a try-lock taken by the statement: one that finds another running skips the round).
 */
export class PayloadStore {
  private waiting = new Map<string, Waiting[]>();
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
    const { rows } = await this.bounded(existsSql, [quoted(this.table)]);
    if (!rows[0]?.exists) {
      try {
        await this.bounded(createSql(this.table, this.key));
      } catch (error) {
        throw new PglnError(LARGE_PAYLOADS_NO_TABLE(this.table, describeError(error), tableDdl(this.table)), { cause: error });
      }
    }
    this.cleanup = setInterval(() => void this.deleteExpired(), cleanupIntervalMs(this.retentionMs)).unref();
  }

  /** Stops the cleanup, and fails the fetches not started (shutdown). */
  close(): void {
    clearInterval(this.cleanup);
    this.cleanup = undefined;
    const waiting = this.waiting;
    this.waiting = new Map();
    for (const callers of waiting.values()) for (const caller of callers) caller.reject(new Error('closed'));
  }

  /** The payload of row `id`, which must be of `channel`; rejects if it is not there or the fetch fails. */
  fetch(id: string, channel: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const callers = this.waiting.get(id);
      if (callers) callers.push({ channel, resolve, reject });
      else this.waiting.set(id, [{ channel, resolve, reject }]);
      if (!this.fetching) {
        this.fetching = true;
        setImmediate(() => void this.drain());
      }
    });
  }

  /**
   * Deletes expired rows, unless another instance is at it. A failure is logged, and the next round
   * tries again; without the privilege to delete (another role's job), it is logged once and the
   * cleanup stops.
   */
  async deleteExpired(): Promise<void> {
    try {
      await this.bounded(cleanupSql(this.table), [this.key.toString(), this.retentionMs]);
    } catch (error) {
      const denied = (error as { code?: unknown }).code === '42501';
      this.logger.warn(LARGE_PAYLOADS_CLEANUP_FAILED(this.table, describeError(error), denied));
      if (denied) clearInterval(this.cleanup);
    }
  }

  /** Fetches in batches, oldest references first, until none waits. */
  private async drain(): Promise<void> {
    while (this.waiting.size > 0) {
      const batch: [string, Waiting[]][] = [];
      for (const entry of this.waiting) {
        batch.push(entry);
        if (batch.length === BATCH) break;
      }
      for (const [id] of batch) this.waiting.delete(id);
      const deferred: [string, Waiting[]][] = [];
      try {
        const { rows } = await this.bounded(fetchSql(this.table), [batch.map(([id]) => id), BATCH_BYTES]);
        const found = new Map<string, { channel: string; payload: string | null }>(rows.map((row) => [row.id, row]));
        for (const [id, callers] of batch) {
          const row = found.get(id);
          // There, but past this fetch's byte budget: first in the next one.
          if (row?.payload === null) {
            deferred.push([id, callers]);
            continue;
          }
          for (const caller of callers) {
            if (row && row.channel === caller.channel) caller.resolve(row.payload);
            else caller.reject(new PayloadMissingError(LARGE_PAYLOAD_MISSING(id, this.table, this.retentionMs, row?.channel)));
          }
        }
      } catch (error) {
        for (const [, callers] of batch) for (const caller of callers) caller.reject(error as Error);
      }
      if (deferred.length > 0) this.waiting = new Map([...deferred, ...this.waiting]);
    }
    this.fetching = false;
  }

  private bounded(text: string, values?: unknown[]): Promise<{ rows: any[] }> {
    return withTimeout(this.query(text, values), this.timeoutMs, () => new PglnTimeoutError(NO_ANSWER(`A query on ${this.table}`, this.timeoutMs)));
  }
}
