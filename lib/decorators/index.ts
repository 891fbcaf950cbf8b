export * from './on-notification.decorator.js';
export * from './on-out-of-sync.decorator.js';
export * from './inject-pgln.decorator.js';
export type { PglnHandlerOptions, TypedMethodDecorator } from './pgln-metadata.js';
