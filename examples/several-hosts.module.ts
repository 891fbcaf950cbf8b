import { Module } from '@nestjs/common';
import { PglnModule } from 'nestjs-pgln';

/**
 * Every node of a cluster, no proxy: the LISTEN connection and the module's pool keep the primary.
 * The same as `connectionString: 'postgres://app:secret@db1:5432,db2:5432,db3:5432/shop?target_session_attrs=primary'`.
 */
@Module({
  imports: [
    PglnModule.forRoot({
      connectionString: process.env.DATABASE_URL, // user, password and database; its host is replaced by hosts
      hosts: [
        { host: 'db1', port: 5432 },
        { host: 'db2', port: 5432 },
        { host: 'db3', port: 5432 },
      ],
      targetSessionAttrs: 'primary', // the default with several hosts
    }),
  ],
})
export class AppModule {}
