import { Module, type DynamicModule } from '@nestjs/common';
import { TerminusModule } from '@nestjs/terminus';
import { PglnModule } from 'nestjs-pgln';
import { PglnHealthIndicator } from 'nestjs-pgln/terminus';
import type pg from 'pg';
import { DATABASE_POOL, DatabaseModule } from './database/database.module.js';
import { HealthController } from './health.controller.js';
import { LiveModule } from './live/live.module.js';
import { ProductsModule } from './products/products.module.js';

/**
 * The application's PglnModule: notifications go through its own pool, and the LISTEN connection
 * reuses that pool's settings. Kept in a const so that a test can replace it
 * (`overrideModule(pglnImport)`: Nest matches an override by identity).
 */
export const pglnImport = PglnModule.forRootAsync({
  inject: [DATABASE_POOL],
  useFactory: (pool: pg.Pool) => ({ pool, applicationName: 'pgln-sample' }),
});

@Module({})
export class AppModule {
  static forDatabase(connectionString: string): DynamicModule {
    return {
      module: AppModule,
      imports: [
        DatabaseModule.forRoot(connectionString),
        pglnImport,
        ProductsModule,
        LiveModule,
        TerminusModule,
      ],
      controllers: [HealthController],
      providers: [PglnHealthIndicator],
    };
  }
}
