// @ts-check
// Packs the repository with `npm pack` and installs the tarball into two separate applications:
// an ESM TypeScript app on NestJS 12 (type-checked against the published .d.ts), and a CommonJS
// app on NestJS 11 with a Terminus 11 health endpoint. Each boots, receives a notification and
// shuts down; each also runs a unit test written with nestjs-pgln/testing and its own
// @nestjs/testing, which opens no socket. Neither installs the optional @opentelemetry/api.
// Usage: node test/pack/pack-smoke.mjs   (uses PGLN_TEST_DATABASE_URL, or starts an embedded server)
import { execFileSync } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { startEmbeddedPostgres } from '../../tools/embedded-postgres.js';

const root = resolve(import.meta.dirname, '../..');
const work = mkdtempSync(join(tmpdir(), 'nestjs-pgln-pack-'));
/** @param {string} cmd @param {string[]} args @param {string} cwd @param {Record<string, string>} [env] */
const run = (cmd, args, cwd, env = {}) =>
  execFileSync(cmd, args, { cwd, env: { ...process.env, ...env }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });

const embedded = process.env.PGLN_TEST_DATABASE_URL ? undefined : await startEmbeddedPostgres();
const DATABASE_URL = process.env.PGLN_TEST_DATABASE_URL ?? /** @type {string} */ (embedded?.url);
try {
  const [{ filename }] = JSON.parse(run('npm', ['pack', '--json', '--pack-destination', work], root));
  const tarball = join(work, filename);
  const versions = JSON.parse(run('npm', ['pkg', 'get', 'devDependencies'], root));
  const npmInstall = ['install', '--no-audit', '--no-fund', '--loglevel=error'];

  const esm = join(work, 'nest12-esm');
  cpSync(join(root, 'test/pack/consumer.ts'), join(esm, 'consumer.ts'));
  cpSync(join(root, 'test/pack/testing-consumer.ts'), join(esm, 'testing-consumer.ts'));
  writeFileSync(join(esm, 'package.json'), JSON.stringify({ name: 'nest12-esm', private: true, type: 'module' }));
  writeFileSync(
    join(esm, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: {
        target: 'es2022', module: 'nodenext', moduleResolution: 'nodenext', strict: true, rootDir: '.',
        experimentalDecorators: true, emitDecoratorMetadata: true, skipLibCheck: false, types: ['node'],
      },
      files: ['consumer.ts', 'testing-consumer.ts'],
    }),
  );
  run('npm', [...npmInstall, tarball, `@nestjs/common@${versions['@nestjs/common']}`, `@nestjs/core@${versions['@nestjs/core']}`,
    `@nestjs/testing@${versions['@nestjs/testing']}`,
    `pg@${versions.pg}`, `reflect-metadata@${versions['reflect-metadata']}`, `rxjs@${versions.rxjs}`,
    `typescript@${versions.typescript}`, `@types/node@${versions['@types/node']}`, `@types/pg@${versions['@types/pg']}`], esm);
  run('npx', ['tsc', '-p', 'tsconfig.json'], esm);
  const esmResult = JSON.parse(run('node', ['consumer.js'], esm, { DATABASE_URL }));
  if (JSON.stringify(esmResult) !== JSON.stringify({ reasons: ['connect'], received: ['pack_smoke:world'] })) {
    throw new Error(`NestJS 12 consumer printed ${JSON.stringify(esmResult)}`);
  }
  console.log('pack smoke: NestJS 12 (ESM, TypeScript) app works with the packed module');
  checkTestingConsumer(run('node', ['testing-consumer.js'], esm), 'NestJS 12 (ESM, TypeScript)');

  const cjs = join(work, 'nest11-cjs');
  cpSync(join(root, 'test/pack/consumer.cjs'), join(cjs, 'consumer.cjs'));
  cpSync(join(root, 'test/pack/testing-consumer.cjs'), join(cjs, 'testing-consumer.cjs'));
  writeFileSync(join(cjs, 'package.json'), JSON.stringify({ name: 'nest11-cjs', private: true }));
  run('npm', [...npmInstall, tarball, '@nestjs/common@^11', '@nestjs/core@^11', '@nestjs/platform-express@^11',
    '@nestjs/terminus@^11', '@nestjs/testing@^11', `pg@${versions.pg}`, `reflect-metadata@${versions['reflect-metadata']}`, `rxjs@${versions.rxjs}`], cjs);
  const cjsResult = JSON.parse(run('node', ['consumer.cjs'], cjs, { DATABASE_URL }));
  const healthy = cjsResult.health?.status === 200 && cjsResult.health.body?.info?.pgln?.status === 'up';
  // Reconnecting, within the grace: up (Terminus 11 has no "degraded"), saying so; past it (downAfterMs 0): down.
  const { grace, strict } = cjsResult.during ?? {};
  const graceUp = grace?.status === 200 && grace.body?.info?.pgln?.status === 'up' && grace.body.info.pgln.state === 'reconnecting';
  const strictDown = strict?.status === 503 && strict.body?.error?.pgln?.status === 'down';
  if (!cjsResult.nest.startsWith('11.') || !cjsResult.terminus.startsWith('11.') || cjsResult.payload !== 'from commonjs' || !healthy || !graceUp || !strictDown) {
    throw new Error(`NestJS 11 consumer printed ${JSON.stringify(cjsResult)}`);
  }
  console.log(
    `pack smoke: NestJS ${cjsResult.nest} (CommonJS) app works with the packed module, without @opentelemetry/api; ` +
      `Terminus ${cjsResult.terminus} /health answers 200 with pgln up when live, 200 with pgln up while reconnecting ` +
      'within the grace, and 503 with pgln down past it',
  );
  const nest11 = checkTestingConsumer(run('node', ['testing-consumer.cjs'], cjs), 'NestJS 11 (CommonJS)');
  if (!nest11.nest?.startsWith('11.')) throw new Error(`the NestJS 11 testing consumer ran @nestjs/testing ${nest11.nest}`);
} finally {
  await embedded?.destroy();
  rmSync(work, { recursive: true, force: true });
}

/**
 * Checks what a testing consumer printed: its handlers ran through PglnTestingModule (connect,
 * then reconnect; an emitted and a looped-back notification) and its notify was recorded.
 * @param {string} output @param {string} app
 */
function checkTestingConsumer(output, app) {
  const result = JSON.parse(output);
  const expected = { reasons: ['connect', 'reconnect'], prices: [[1, 250], [2, 300]], sent: [{ channel: 'prices', payload: { id: 2, cents: 300 } }] };
  const { nest: _, sockets, ...seen } = result;
  if (sockets !== 0) throw new Error(`${app} testing consumer opened ${sockets} socket(s)`);
  if (JSON.stringify(seen) !== JSON.stringify(expected)) throw new Error(`${app} testing consumer printed ${output}`);
  console.log(`pack smoke: ${app} unit test with nestjs-pgln/testing: overrideModule, emit, reconnect, sent, no database`);
  return result;
}
