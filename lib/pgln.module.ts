import { Module } from '@nestjs/common';
import { DiscoveryModule } from '@nestjs/core';
import { ConfigurableModuleClass } from './pgln.module-definition.js';
import { PglnExplorer } from './pgln.explorer.js';
import { PglnService } from './pgln.service.js';

/**
 * PostgreSQL LISTEN/NOTIFY for NestJS. Import it once, in the root module:
 *
 * ```ts
 * PglnModule.forRoot({ connectionString: process.env.DATABASE_URL })
 * PglnModule.forRootAsync({ inject: [ConfigService], useFactory: (config) => ({ ... }) })
 * ```
 *
 * It provides {@link PglnService} (global by default) and, at bootstrap, subscribes every
 * `@OnNotification` / `@OnOutOfSync` method it finds on providers and controllers.
 */
@Module({
  imports: [DiscoveryModule],
  providers: [PglnService, PglnExplorer],
  exports: [PglnService],
})
export class PglnModule extends ConfigurableModuleClass {}
