import { Module, type DynamicModule, type Provider } from '@nestjs/common';
import { DiscoveryModule } from '@nestjs/core';
import { PglnOptionsError } from './errors/index.js';
import { DEFAULT_CONNECTION, PGLN_CONNECTION_NAME } from './pgln.constants.js';
import { CONNECTION_NAME_INVALID } from './pgln.messages.js';
import {
  ConfigurableModuleClass,
  type PglnModuleAsyncOptions,
  type PglnModuleForRootOptions,
} from './pgln.module-definition.js';
import { PglnExplorer } from './pgln.explorer.js';
import { PglnService } from './pgln.service.js';
import { getPglnToken } from './pgln.tokens.js';

/** Adds one instance's service, under its token, to the module `forRoot` / `forRootAsync` built. */
function withInstance(module: DynamicModule, name: unknown = DEFAULT_CONNECTION): DynamicModule {
  if (typeof name !== 'string' || name.trim() === '') {
    throw new PglnOptionsError(CONNECTION_NAME_INVALID('PglnModule', name === null ? 'null' : typeof name === 'string' ? JSON.stringify(name) : typeof name));
  }
  const token = getPglnToken(name);
  const service: Provider = token === PglnService ? PglnService : { provide: token, useClass: PglnService };
  return {
    ...module,
    providers: [...(module.providers ?? []), { provide: PGLN_CONNECTION_NAME, useValue: name }, PglnExplorer, service],
    exports: [...(module.exports ?? []), token],
  };
}

/**
 * PostgreSQL LISTEN/NOTIFY for NestJS. Import it once per database, in the root module:
 *
 * ```ts
 * PglnModule.forRoot({ connectionString: process.env.DATABASE_URL })
 * PglnModule.forRootAsync({ inject: [ConfigService], useFactory: (config) => ({ ... }) })
 * PglnModule.forRoot({ name: 'audit', connectionString: process.env.AUDIT_DATABASE_URL })
 * ```
 *
 * Each provides its {@link PglnService} (global by default; a named one through
 * `@InjectPgln(name)`) and, at bootstrap, subscribes every `@OnNotification` / `@OnOutOfSync`
 * method bound to it that it finds on providers and controllers.
 */
@Module({ imports: [DiscoveryModule] })
export class PglnModule extends ConfigurableModuleClass {
  /** One instance, configured now. */
  static forRoot(options: PglnModuleForRootOptions): DynamicModule {
    return withInstance(super.forRoot(options), options?.name);
  }

  /** One instance, configured by a factory, a class or an existing provider (`useFactory` / `useClass` / `useExisting`). */
  static forRootAsync(options: PglnModuleAsyncOptions): DynamicModule {
    return withInstance(super.forRootAsync(options), options?.name);
  }
}
