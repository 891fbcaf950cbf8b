import { ConfigurableModuleBuilder } from '@nestjs/common';
import type { PglnModuleOptions } from './interfaces/index.js';
import { DEFAULT_CONNECTION } from './pgln.constants.js';

/** Extra `forRoot` / `forRootAsync` settings that shape the module rather than the listener. */
export interface PglnModuleExtras {
  /**
   * Register the module globally, so `PglnService` can be injected anywhere without importing it again.
   * @default true
   */
  isGlobal: boolean;
  /**
   * The instance's name, for an application with several databases: each `forRoot({ name })` is
   * an instance of its own (LISTEN connection, pool, state, shutdown), injected with
   * `@InjectPgln(name)`; decorators pick it with `{ connection: name }`. Like TypeORM's named
   * connections.
   * @default 'default'
   */
  name?: string;
}

export const {
  ConfigurableModuleClass,
  MODULE_OPTIONS_TOKEN: PGLN_MODULE_OPTIONS,
  OPTIONS_TYPE,
  ASYNC_OPTIONS_TYPE,
} = new ConfigurableModuleBuilder<PglnModuleOptions>({ moduleName: 'Pgln' })
  .setClassMethodName('forRoot')
  .setFactoryMethodName('createPglnOptions')
  .setExtras<PglnModuleExtras>({ isGlobal: true, name: DEFAULT_CONNECTION }, (definition, extras) => ({ ...definition, global: extras.isGlobal }))
  .build();

/** A class for `PglnModule.forRootAsync({ useClass })` / `useExisting`: it provides the module options. */
export interface PglnOptionsFactory {
  createPglnOptions(): PglnModuleOptions | Promise<PglnModuleOptions>;
}

/** What `PglnModule.forRoot()` takes: the module options plus `isGlobal` and `name`. */
export type PglnModuleForRootOptions = typeof OPTIONS_TYPE;

/** What `PglnModule.forRootAsync()` takes: `imports`, `inject`, `useFactory` / `useClass` / `useExisting`, `isGlobal`, `name`. */
export type PglnModuleAsyncOptions = typeof ASYNC_OPTIONS_TYPE;
