// @ts-check
/**
 * Generates the Prisma client of the ORM tests (test/orm/prisma) without network access.
 * `prisma generate` downloads a schema engine first unless PRISMA_SCHEMA_ENGINE_BINARY names an
 * existing file; generating a client needs no engine, so any file will do: Node's own binary.
 */
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const cli = require.resolve('prisma/build/index.js');
const result = spawnSync(process.execPath, [cli, 'generate', '--schema', 'test/orm/prisma/schema.prisma'], {
  stdio: ['ignore', 'ignore', 'inherit'],
  env: { ...process.env, PRISMA_SCHEMA_ENGINE_BINARY: process.execPath, PRISMA_HIDE_UPDATE_MESSAGE: '1', CHECKPOINT_DISABLE: '1' },
});
process.exit(result.status ?? 1);
