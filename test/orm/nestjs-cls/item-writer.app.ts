/**
 * A NestJS application that writes through @nestjs-cls/transactional (TypeORM adapter) and
 * notifies inside that ambient transaction: the recipe of the README, run by test/orm.spec.ts in
 * a Node process of its own. (nestjs-cls is CommonJS and requires NestJS 12, which is ESM only:
 * Node 20.19+ loads that, Jest's module system on Node 20 does not.)
 *
 * Usage: DATABASE_URL=... TABLE=... CHANNEL=... node item-writer.app.js commit|batch|rollback|fail-later
 * Prints one line of JSON: {"ok":true} or {"error":"..."}.
 */
import 'reflect-metadata';
import { Injectable, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { ClsPluginTransactional, Transactional, TransactionHost } from '@nestjs-cls/transactional';
import { TransactionalAdapterTypeOrm } from '@nestjs-cls/transactional-adapter-typeorm';
import { ClsModule } from 'nestjs-cls';
import { DataSource } from 'typeorm';
import { PglnModule, PglnService } from '../../../lib/index.js';

const { DATABASE_URL, TABLE, CHANNEL } = process.env as Record<string, string>;
const DATA_SOURCE = Symbol('DATA_SOURCE');

@Module({
  providers: [
    {
      provide: DATA_SOURCE,
      useFactory: () => new DataSource({ type: 'postgres', url: DATABASE_URL, entities: [] }).initialize(),
    },
  ],
  exports: [DATA_SOURCE],
})
class DatabaseModule {}

@Injectable()
class ItemWriter {
  constructor(
    private readonly txHost: TransactionHost<TransactionalAdapterTypeOrm>,
    private readonly pgln: PglnService,
  ) {}

  /** Inserts an item and announces it, in one transaction; `then` runs last and may fail it. */
  @Transactional()
  async add(id: string, name: string | null, then?: () => void): Promise<void> {
    await this.txHost.tx.query(`INSERT INTO ${TABLE} (id, name) VALUES ($1, $2)`, [id, name]);
    // txHost.tx is the ambient transaction's EntityManager: read it on each call.
    await this.pgln.notify(CHANNEL, id, { executor: this.txHost.tx });
    then?.();
  }

  /** Inserts two items and announces both in one statement. */
  @Transactional()
  async addBoth(first: string, second: string): Promise<void> {
    for (const id of [first, second]) {
      await this.txHost.tx.query(`INSERT INTO ${TABLE} (id, name) VALUES ($1, $2)`, [id, id]);
    }
    await this.pgln.notifyMany(
      [first, second].map((id) => ({ channel: CHANNEL, payload: id })),
      { executor: this.txHost.tx },
    );
  }

  /** Announces first, then fails on the insert (NOT NULL): nothing may be delivered. */
  @Transactional()
  async announceThenFail(id: string): Promise<void> {
    await this.pgln.notify(CHANNEL, id, { executor: this.txHost.tx });
    await this.txHost.tx.query(`INSERT INTO ${TABLE} (id, name) VALUES ($1, NULL)`, [id]);
  }
}

@Module({
  imports: [
    PglnModule.forRoot({ connectionString: DATABASE_URL, applicationName: 'pgln-nestjs-cls' }),
    ClsModule.forRoot({
      global: true,
      plugins: [
        new ClsPluginTransactional({
          imports: [DatabaseModule],
          adapter: new TransactionalAdapterTypeOrm({ dataSourceToken: DATA_SOURCE }),
        }),
      ],
    }),
  ],
  providers: [ItemWriter],
})
class AppModule {}

const app = await NestFactory.createApplicationContext(AppModule, { logger: false });
const writer = app.get(ItemWriter);
let outcome: { ok: true } | { error: string };
try {
  const step = process.argv[2];
  if (step === 'commit') await writer.add('a', 'first');
  else if (step === 'batch') await writer.addBoth('d', 'e');
  else if (step === 'rollback') {
    await writer.add('b', 'second', () => {
      throw new Error('rolled back on purpose');
    });
  } else await writer.announceThenFail('c');
  outcome = { ok: true };
} catch (error) {
  outcome = { error: (error as Error).message };
}
await app.get<DataSource>(DATA_SOURCE).destroy();
await app.close();
process.stdout.write(`${JSON.stringify(outcome)}\n`);
