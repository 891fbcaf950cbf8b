import {
  Body,
  Controller,
  Delete,
  Get,
  HttpCode,
  NotFoundException,
  Param,
  ParseIntPipe,
  Post,
  Put,
  Query,
  BadRequestException,
} from '@nestjs/common';
import { PglnService } from 'nestjs-pgln';
import { Products, type Product } from './product.js';
import { ProductCache } from './product-cache.service.js';
import { ProductsRepository } from './products.repository.js';

interface ProductInput {
  name?: unknown;
  priceCents?: unknown;
}

function parseInput(body: ProductInput): { name: string; priceCents: number } {
  const { name, priceCents } = body ?? {};
  if (typeof name !== 'string' || name.trim() === '') throw new BadRequestException('name must be a non-empty string');
  if (!Number.isInteger(priceCents) || (priceCents as number) < 0) {
    throw new BadRequestException('priceCents must be an integer >= 0');
  }
  return { name, priceCents: priceCents as number };
}

/**
 * Reads come from the cache; writes go to the database, through the repository, which notifies in
 * the same transaction. The cache applies a write when it commits, a few milliseconds later.
 */
@Controller('products')
export class ProductsController {
  constructor(
    private readonly cache: ProductCache,
    private readonly products: ProductsRepository,
    private readonly pgln: PglnService,
  ) {}

  /** Every product, from the cache; `?from=table` reads the table instead (the live page, after an out-of-sync event). */
  @Get()
  async list(@Query('from') from?: string): Promise<Product[]> {
    if (from === undefined) return this.cache.all();
    if (from === 'table') return this.products.all();
    throw new BadRequestException(`from must be "table" (or absent, for the cache), got ${JSON.stringify(from)}`);
  }

  /** Reloads the cache from the table now (an admin action), holding notifications meanwhile. */
  @Post('resync')
  @HttpCode(200)
  async resync(): Promise<{ products: number }> {
    await this.pgln.resync(Products);
    return { products: this.cache.all().length };
  }

  @Get(':id')
  get(@Param('id', ParseIntPipe) id: number): Product {
    const product = this.cache.get(id);
    if (!product) throw new NotFoundException(`No product ${id}`);
    return product;
  }

  @Post()
  async create(@Body() body: ProductInput): Promise<{ id: number }> {
    const { name, priceCents } = parseInput(body);
    const { id } = await this.products.create(name, priceCents);
    return { id };
  }

  @Put(':id')
  @HttpCode(204)
  async update(@Param('id', ParseIntPipe) id: number, @Body() body: ProductInput): Promise<void> {
    const { name, priceCents } = parseInput(body);
    if (!(await this.products.update(id, name, priceCents))) throw new NotFoundException(`No product ${id}`);
  }

  @Delete(':id')
  @HttpCode(204)
  async remove(@Param('id', ParseIntPipe) id: number): Promise<void> {
    if (!(await this.products.remove(id))) throw new NotFoundException(`No product ${id}`);
  }
}
