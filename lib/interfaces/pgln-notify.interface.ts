import type { PglnChannel } from './pgln-channel.interface.js';

/**
 * One notification to send with `PglnService.notifyMany()`. On a channel defined with
 * `defineChannel`, the payload has the channel's type (sent as JSON, validated by its schema if
 * it has one); on a plain name, a string is sent as is, `undefined` as the empty payload,
 * anything else as JSON.
 */
export type PglnOutgoingNotification<TChannel extends string | PglnChannel<any, any> = string | PglnChannel<any, any>> = {
  readonly channel: TChannel;
} & (TChannel extends PglnChannel<any, infer TInput> ? { readonly payload: NoInfer<TInput> } : { readonly payload?: string | object });

/** A notify statement, validated, to run on a connection of yours: `SELECT pg_notify($1, $2)`. */
export interface PglnNotifyQuery {
  readonly text: string;
  /** Channel name and payload text. */
  readonly values: [string, string];
}

/** Many notifications in one statement, in order: `pg_notify` over `unnest($1::text[], $2::text[])`. */
export interface PglnNotifyManyQuery {
  readonly text: string;
  /**
   * Channel names and payload texts, index by index; with an exactly-once channel among them, a
   * third array says which are wrapped with the sending transaction's id; with `largePayloads` and a
   * payload too large for pg_notify among them, a fourth says which go through the table.
   */
  readonly values: [string[], string[], boolean[]?, boolean[]?];
}

/**
 * Anything with `query(text, values)`: a `pg.Client` or `PoolClient`, a TypeORM `EntityManager` or
 * `QueryRunner`, a `txHost.tx` of `@nestjs-cls/transactional` over TypeORM.
 */
export interface PglnQueryable {
  query(text: string, values: any[]): PromiseLike<unknown>;
}

/**
 * Where `notify` runs its statement instead of the module's pool: a connection of yours, inside
 * your transaction. An object with `query(text, values)`, or a function for the libraries that
 * have none, e.g. Prisma's `(text, values) => tx.$executeRawUnsafe(text, ...values)`.
 */
export type PglnExecutor = PglnQueryable | ((text: string, values: any[]) => PromiseLike<unknown>);

/** Options of `PglnService.notify()` and `notifyMany()`. */
export interface PglnNotifyOptions {
  /**
   * Run the statement here, on your connection and inside its transaction, rather than on a
   * connection of the module's pool: the notification is then delivered when your transaction
   * commits, and never if it rolls back. The connection is yours: no timeout, no release.
   */
  readonly executor?: PglnExecutor;
}
