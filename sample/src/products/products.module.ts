import { Module } from '@nestjs/common';
import { ProductCache } from './product-cache.service.js';
import { ProductsController } from './products.controller.js';

@Module({
  providers: [ProductCache],
  controllers: [ProductsController],
})
export class ProductsModule {}
