/** Registration stored by `@OnNotification`. */
export interface OnNotificationMetadata {
  readonly channel: string;
  readonly json: boolean;
}

/** Registration stored by `@OnOutOfSync`. */
export interface OnOutOfSyncMetadata {
  readonly channel: string;
}

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
