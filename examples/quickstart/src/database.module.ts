import { Global, Logger, Module, type OnApplicationShutdown } from '@nestjs/common';
import pg from 'pg';

/** The application's own pool, injected by its class: `constructor(private readonly pool: pg.Pool)`. */
@Global()
@Module({
  providers: [
    {
      provide: pg.Pool,
      useFactory: () => {
        const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
        // pg reports a lost idle connection on the pool: unheard, the error would crash the process.
        pool.on('error', (error) => new Logger('Database').warn(error.message));
        return pool;
      },
    },
  ],
  exports: [pg.Pool],
})
export class DatabaseModule implements OnApplicationShutdown {
  constructor(private readonly pool: pg.Pool) {}

  async onApplicationShutdown(): Promise<void> {
    await this.pool.end();
  }
}
