export { PglnModule } from './pgln.module.js';
export {
  PGLN_MODULE_OPTIONS,
  type PglnModuleAsyncOptions,
  type PglnModuleExtras,
  type PglnModuleForRootOptions,
  type PglnOptionsFactory,
} from './pgln.module-definition.js';
export { PglnService } from './pgln.service.js';
export { getPglnToken } from './pgln.tokens.js';
export { DEFAULT_CONNECTION } from './pgln.constants.js';
export { defineChannel } from './pgln.define-channel.js';
export * from './decorators/index.js';
export * from './interfaces/index.js';
export * from './errors/index.js';
export { createMultiHostPool, type PglnPoolConfig } from './pgln.multi-host-pool.js';
