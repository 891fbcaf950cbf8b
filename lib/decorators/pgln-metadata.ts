import type { StandardSchemaV1 } from '@standard-schema/spec';

/** Registration stored by `@OnNotification`. */
export interface OnNotificationMetadata {
  readonly channel: string;
  readonly json: boolean;
  /** The schema of a channel defined with `defineChannel`. */
  readonly schema?: StandardSchemaV1;
}

/** Registration stored by `@OnOutOfSync`. */
export interface OnOutOfSyncMetadata {
  readonly channel: string;
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
