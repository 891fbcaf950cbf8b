import { Global, Inject, Logger, Module, type DynamicModule, type OnApplicationShutdown } from '@nestjs/common';
import { createMultiHostPool } from 'nestjs-pgln';
import type pg from 'pg';

/** Injection token of the application's `pg.Pool`. */
export const DATABASE_POOL = Symbol('DATABASE_POOL');

/**
 * The application's own connection pool, shared by the repositories and by PglnModule. Its
 * connection string may list every node of a cluster (`postgres://u@db1,db2,db3/shop`): the pool
 * keeps the primary, and PglnModule's LISTEN connection chooses among the same nodes.
 */
@Global()
@Module({})
export class DatabaseModule implements OnApplicationShutdown {
  /** The pool's connections opened and not closed yet. */
  private open = 0;

  constructor(@Inject(DATABASE_POOL) private readonly pool: pg.Pool) {
    pool.on('connect', () => this.open++);
    pool.on('remove', () => this.open--);
  }

  static forRoot(connectionString: string): DynamicModule {
    return {
      module: DatabaseModule,
      providers: [
        {
          provide: DATABASE_POOL,
          useFactory: () => {
            // A plain pg.Pool for one host; for several, one that keeps the primary (node-postgres cannot).
            const pool = createMultiHostPool({ connectionString, max: 5 });
            // pg emits errors of idle clients on the pool: without a listener they crash the process.
            pool.on('error', (error) => new Logger('Database').warn(`Idle connection failed: ${error.message}`));
            return pool;
          },
        },
      ],
      exports: [DATABASE_POOL],
    };
  }

  /**
   * Ends the pool and waits until each connection has closed: pg-pool's `end()` resolves before
   * they have (its `'remove'` event says when one has), and a server stopped right after (the
   * embedded one, on Ctrl+C) would cut them, each with an error.
   */
  async onApplicationShutdown(): Promise<void> {
    const closed = new Promise<void>((resolve) => {
      const check = () => this.open === 0 && resolve();
      this.pool.on('remove', check);
      check();
    });
    await this.pool.end();
    await closed;
  }
}
