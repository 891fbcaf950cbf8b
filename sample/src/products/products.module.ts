import { Module } from '@nestjs/common';
import { ProductCache } from './product-cache.service.js';
import { ProductsController } from './products.controller.js';
import { ProductsRepository } from './products.repository.js';

@Module({
  providers: [ProductCache, ProductsRepository],
  controllers: [ProductsController],
})
export class ProductsModule {}
