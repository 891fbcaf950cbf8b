import 'reflect-metadata';
import { Logger } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { startEmbeddedPostgres } from '../../tools/embedded-postgres.js';
import { AppModule } from './app.module.js';
import { createSchema } from './database/schema.js';

async function bootstrap(): Promise<void> {
  const logger = new Logger('Sample');
  const embedded = process.env.DATABASE_URL ? undefined : await startEmbeddedPostgres({ ownSignals: true });
  const databaseUrl = process.env.DATABASE_URL ?? embedded!.url;
  logger.log(embedded ? `Started embedded PostgreSQL on 127.0.0.1:${embedded.port}` : 'Using DATABASE_URL');
  await createSchema(databaseUrl);

  // init() resolves after ProductCache.reload: the app never serves a cold cache.
  // forceCloseConnections: the live page's event streams (and keep-alive connections) would hold up app.close().
  const app = await NestFactory.create(AppModule.forDatabase(databaseUrl), { forceCloseConnections: true });
  const port = Number(process.env.PORT ?? 3000);
  await app.listen(port);

  const url = `http://localhost:${port}`;
  logger.log(`Listening on ${url}: open it in a browser for the live page. Try:
    curl ${url}/products
    curl -X PUT ${url}/products/1 -H 'content-type: application/json' -d '{"name":"Ristretto","priceCents":240}'
    curl ${url}/products/1
    curl -X POST ${url}/products/resync
    curl ${url}/health
  Stop with Ctrl+C.`);

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.log(`${signal}: shutting down`);
    await app.close();
    await embedded?.destroy();
    process.exit(0);
  };
  process.once('SIGINT', () => void stop('SIGINT'));
  process.once('SIGTERM', () => void stop('SIGTERM'));
  process.once('SIGHUP', () => void stop('SIGHUP')); // the terminal closed
}

bootstrap().catch((error) => {
  console.error(error);
  process.exit(1);
});
