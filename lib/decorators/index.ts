export * from './on-notification.decorator.js';
export * from './on-out-of-sync.decorator.js';
export type { TypedMethodDecorator } from './pgln-metadata.js';
