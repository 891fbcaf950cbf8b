import type { StandardSchemaV1 } from '@standard-schema/spec';

/**
 * A channel defined once with `defineChannel()` and used everywhere its name would be: in
 * `@OnNotification`, `@OnOutOfSync`, `notify`, `notifyMany`, `listen`, `unlisten` and `resync`.
 * Its payloads are JSON, typed `TOutput` for handlers and `TInput` for senders (the same unless
 * its schema transforms them), and validated by its schema, if any, on both sides.
 */
export interface PglnChannel<TOutput = unknown, TInput = TOutput> {
  /** The channel name, exactly as PostgreSQL sees it. */
  readonly name: string;
  /** A Standard Schema (zod 4, valibot, arktype, ...) that payloads must pass, sent and received. */
  readonly schema?: StandardSchemaV1<TInput, TOutput>;
  /**
   * Every notification carries its sending transaction's id, so that a subscriber whose reload
   * recorded its snapshot (`OutOfSyncEvent.snapshot`) skips what that reload already read.
   */
  readonly exactlyOnce?: boolean;
  /** Carries the payload types; never set at runtime. */
  readonly '~types'?: { readonly input: TInput; readonly output: TOutput };
}

/** The payload type handlers of a channel receive: a string for a plain name. */
export type PglnPayloadOf<TChannel> = TChannel extends PglnChannel<infer TOutput, any> ? TOutput : string;

/** What senders pass for a channel: the schema's input type, or a string or JSON-encodable value for a plain name. */
export type PglnSendPayloadOf<TChannel> = TChannel extends PglnChannel<any, infer TInput> ? TInput : string | object | undefined;
