/** The README's "Behind PgBouncer": notify through PgBouncer (transaction mode), LISTEN on the database itself. */
import { Module } from '@nestjs/common';
import { PglnModule } from 'nestjs-pgln';

@Module({
  imports: [
    PglnModule.forRoot({
      connectionString: 'postgres://app@pgbouncer:6432/shop', // notify: the pool, through PgBouncer
      listener: { connectionString: 'postgres://app@db-primary:5432/shop' }, // LISTEN: the database itself
    }),
  ],
})
export class AppModule {}
