import { PglnOptionsError } from '../errors/index.js';
import { DEFAULT_CONNECTION } from '../pgln.constants.js';
import { HANDLER_CONNECTION_INVALID } from '../pgln.messages.js';
import type { StandardSchemaV1 } from '@standard-schema/spec';

/** Registration stored by `@OnNotification`. */
export interface OnNotificationMetadata {
  readonly channel: string;
  /** The instance (`PglnModule.forRoot({ name })`) the handler belongs to. */
  readonly connection: string;
  readonly json: boolean;
  /** The schema of a channel defined with `defineChannel`. */
  readonly schema?: StandardSchemaV1;
  /** A channel defined `exactlyOnce`: payloads come in the envelope with the sender's transaction id. */
  readonly exactlyOnce?: boolean;
}

/** Registration stored by `@OnOutOfSync`. */
export interface OnOutOfSyncMetadata {
  readonly channel: string;
  readonly connection: string;
}

/** Options every handler decorator takes. */
export interface PglnHandlerOptions {
  /**
   * The instance whose LISTEN connection the handler is bound to: the `name` given to
   * `PglnModule.forRoot()`. An application with one database leaves it out.
   * @default 'default'
   */
  connection?: string;
}

/** The `connection` option checked (a decorator error shows at class definition, naming the channel). */
export function connectionOption(channel: string, options: PglnHandlerOptions | undefined): string {
  const connection = options?.connection ?? DEFAULT_CONNECTION;
  if (typeof connection !== 'string' || connection.trim() === '') {
    throw new PglnOptionsError(HANDLER_CONNECTION_INVALID(channel, connection === null ? 'null' : typeof connection === 'string' ? '""' : typeof connection));
  }
  return connection;
}

/**
 * A method decorator that only applies to methods assignable to `F`: a handler whose parameters
 * do not fit the channel's payload does not compile.
 */
export type TypedMethodDecorator<F> = <M extends F>(
  target: object,
  key: string | symbol,
  descriptor: TypedPropertyDescriptor<M>,
) => TypedPropertyDescriptor<M> | void;

/**
 * Adds `entry` to the array stored under `key` on a method. Decorators run bottom-up, so
 * prepending keeps the entries in source order.
 */
export function prependMetadata<T>(key: string, entry: T): MethodDecorator {
  return (_target, _key, descriptor) => {
    const method = descriptor.value as object;
    const existing: T[] = Reflect.getMetadata(key, method) ?? [];
    Reflect.defineMetadata(key, [entry, ...existing], method);
    return descriptor;
  };
}
