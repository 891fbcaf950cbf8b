/**
 * The README's @nestjs-cls/transactional recipe (TypeORM adapter). Jest cannot load nestjs-cls
 * beside NestJS 12, so test/orm/nestjs-cls/item-writer.app.ts, a process of its own, runs the
 * same service on its test table.
 */
import { Injectable } from '@nestjs/common';
import { Transactional, TransactionHost } from '@nestjs-cls/transactional';
import type { TransactionalAdapterTypeOrm } from '@nestjs-cls/transactional-adapter-typeorm';
import { PglnService } from 'nestjs-pgln';

// @nestjs-cls/transactional with the TypeORM adapter: the ambient transaction, nothing passed down
@Injectable()
export class ItemsService {
  constructor(
    private readonly txHost: TransactionHost<TransactionalAdapterTypeOrm>,
    private readonly pgln: PglnService,
  ) {}

  @Transactional()
  async add(id: string, name: string): Promise<void> {
    await this.txHost.tx.query('INSERT INTO items (id, name) VALUES ($1, $2)', [id, name]);
    await this.pgln.notify('items', id, { executor: this.txHost.tx }); // read txHost.tx on each call
  }
}
