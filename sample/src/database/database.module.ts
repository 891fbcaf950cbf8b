import { Global, Inject, Logger, Module, type DynamicModule, type OnApplicationShutdown } from '@nestjs/common';
import pg from 'pg';

/** Injection token of the application's `pg.Pool`. */
export const DATABASE_POOL = Symbol('DATABASE_POOL');

/** The application's own connection pool, shared by the repositories and by PglnModule. */
@Global()
@Module({})
export class DatabaseModule implements OnApplicationShutdown {
  constructor(@Inject(DATABASE_POOL) private readonly pool: pg.Pool) {}

  static forRoot(connectionString: string): DynamicModule {
    return {
      module: DatabaseModule,
      providers: [
        {
          provide: DATABASE_POOL,
          useFactory: () => {
            const pool = new pg.Pool({ connectionString, max: 5 });
            // pg emits errors of idle clients on the pool: without a listener they crash the process.
            pool.on('error', (error) => new Logger('Database').warn(`Idle connection failed: ${error.message}`));
            return pool;
          },
        },
      ],
      exports: [DATABASE_POOL],
    };
  }

  async onApplicationShutdown(): Promise<void> {
    await this.pool.end();
  }
}
