export * from './pgln.error.js';
export * from './pgln-channel.error.js';
export * from './pgln-payload.error.js';
export * from './pgln-options.error.js';
export * from './pgln-closed.error.js';
export * from './pgln-handler.error.js';
export * from './pgln-connection.error.js';
export * from './pgln-overflow.error.js';
