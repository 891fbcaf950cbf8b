import { Module } from '@nestjs/common';
import { PglnModule } from 'nestjs-pgln';
import { DatabaseModule } from './database.module.js';
import { ProductCache } from './product-cache.js';
import { ProductsService } from './products.service.js';

// In a const, so that a test can replace it: overrideModule(pglnImport) (see "Testing your app").
export const pglnImport = PglnModule.forRoot({ connectionString: process.env.DATABASE_URL });

@Module({
  imports: [DatabaseModule, pglnImport],
  providers: [ProductCache, ProductsService],
})
export class AppModule {}
