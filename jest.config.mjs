/**
 * Jest in ESM mode (NestJS 12 is ESM only): run through `npm test`, which passes
 * `--experimental-vm-modules` to Node. Every suite talks to a real PostgreSQL that
 * test/support/global-setup.mjs provides.
 * @type {import('jest').Config}
 */
export default {
  testEnvironment: 'node',
  extensionsToTreatAsEsm: ['.ts'],
  transform: {
    '^.+\\.ts$': ['ts-jest', { useESM: true, tsconfig: 'tsconfig.json' }],
  },
  moduleNameMapper: {
    '^(\\.{1,2}/.*)\\.js$': '$1',
    '^nestjs-pgln$': '<rootDir>/lib/index.ts',
    '^nestjs-pgln/terminus$': '<rootDir>/lib/terminus/index.ts',
    '^nestjs-pgln/testing$': '<rootDir>/lib/testing/index.ts',
  },
  roots: ['<rootDir>/test', '<rootDir>/sample/test'],
  testMatch: ['**/*.spec.ts'],
  setupFilesAfterEnv: ['<rootDir>/test/support/setup.ts'],
  globalSetup: '<rootDir>/test/support/global-setup.mjs',
  globalTeardown: '<rootDir>/test/support/global-teardown.mjs',
  testTimeout: 30000,
  reporters: ['default', '<rootDir>/test/support/summary-reporter.mjs'],
};
