export {
  PglnTestingModule,
  type PglnTestingModuleAsyncOptions,
  type PglnTestingModuleForRootOptions,
  type PglnTestingOptions,
} from './pgln-testing.module.js';
export { getPglnTestBusToken, PglnTestBus } from './pgln-test-bus.js';
export { EMITTED_BY, SENT_BY, type SentNotification } from './memory-transport.js';
