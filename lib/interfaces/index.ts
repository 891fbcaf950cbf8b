export * from './pgln-module-options.interface.js';
export * from './pgln-notification.interface.js';
export * from './pgln-listen-handlers.interface.js';
export * from './pgln-state.interface.js';
export * from './pgln-channel.interface.js';
export * from './pgln-notify.interface.js';
export * from './pgln-stats.interface.js';
export * from './pgln-channel-event.interface.js';
