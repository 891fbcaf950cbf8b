import {
  Body,
  Controller,
  Delete,
  Get,
  HttpCode,
  Inject,
  NotFoundException,
  Param,
  ParseIntPipe,
  Post,
  Put,
  BadRequestException,
} from '@nestjs/common';
import type pg from 'pg';
import { DATABASE_POOL } from '../database/database.module.js';
import type { Product } from './product.js';
import { ProductCache } from './product-cache.service.js';

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
 * Reads come from the cache; writes go to the database only. The cache learns about a write
 * from the trigger's notification, a few milliseconds later.
 */
@Controller('products')
export class ProductsController {
  constructor(
    private readonly cache: ProductCache,
    @Inject(DATABASE_POOL) private readonly pool: pg.Pool,
  ) {}

  @Get()
  list(): Product[] {
    return this.cache.all();
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
    const { rows } = await this.pool.query<{ id: number }>(
      'INSERT INTO products (name, price_cents) VALUES ($1, $2) RETURNING id',
      [name, priceCents],
    );
    return rows[0]!;
  }

  @Put(':id')
  @HttpCode(204)
  async update(@Param('id', ParseIntPipe) id: number, @Body() body: ProductInput): Promise<void> {
    const { name, priceCents } = parseInput(body);
    const { rowCount } = await this.pool.query('UPDATE products SET name = $2, price_cents = $3 WHERE id = $1', [
      id,
      name,
      priceCents,
    ]);
    if (!rowCount) throw new NotFoundException(`No product ${id}`);
  }

  @Delete(':id')
  @HttpCode(204)
  async remove(@Param('id', ParseIntPipe) id: number): Promise<void> {
    const { rowCount } = await this.pool.query('DELETE FROM products WHERE id = $1', [id]);
    if (!rowCount) throw new NotFoundException(`No product ${id}`);
  }
}
