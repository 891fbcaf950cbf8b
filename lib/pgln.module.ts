import { Module, type DynamicModule } from '@nestjs/common';
import { DiscoveryModule } from '@nestjs/core';
import { withInstance } from './pgln.instance.js';
import type { PglnService } from './pgln.service.js';
import {
  ConfigurableModuleClass,
  type PglnModuleAsyncOptions,
  type PglnModuleForRootOptions,
} from './pgln.module-definition.js';

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
    return withInstance('PglnModule', super.forRoot(options), options?.name);
  }

  /** One instance, configured by a factory, a class or an existing provider (`useFactory` / `useClass` / `useExisting`). */
  static forRootAsync(options: PglnModuleAsyncOptions): DynamicModule {
    return withInstance('PglnModule', super.forRootAsync(options), options?.name);
  }
}
