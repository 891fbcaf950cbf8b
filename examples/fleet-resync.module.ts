import { Module } from '@nestjs/common';
import { PglnModule } from 'nestjs-pgln';

/** A fleet behind one primary: at most 4 reloads at once across every instance, each started within 2 s of a reconnect. */
@Module({
  imports: [
    PglnModule.forRoot({
      connectionString: process.env.DATABASE_URL,
      applicationName: 'orders-service', // the instances sharing slots: same applicationName (and instance name)
      resync: { concurrency: 4, jitterMs: 2_000 },
    }),
  ],
})
export class AppModule {}
