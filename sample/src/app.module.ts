import { Module, type DynamicModule } from '@nestjs/common';
import { TerminusModule } from '@nestjs/terminus';
import { PglnModule } from 'nestjs-pgln';
import { PglnHealthIndicator } from 'nestjs-pgln/terminus';
import type pg from 'pg';
import { DATABASE_POOL, DatabaseModule } from './database/database.module.js';
import { HealthController } from './health.controller.js';
import { ProductsModule } from './products/products.module.js';

@Module({})
export class AppModule {
  static forDatabase(connectionString: string): DynamicModule {
    return {
      module: AppModule,
      imports: [
        DatabaseModule.forRoot(connectionString),
        // Notify through the application's own pool; the LISTEN connection reuses its settings.
        PglnModule.forRootAsync({
          inject: [DATABASE_POOL],
          useFactory: (pool: pg.Pool) => ({ pool, applicationName: 'pgln-sample' }),
        }),
        ProductsModule,
        TerminusModule,
      ],
      controllers: [HealthController],
      providers: [PglnHealthIndicator],
    };
  }
}
