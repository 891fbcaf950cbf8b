import { ConfigurableModuleBuilder, Module, type DynamicModule, type Provider } from '@nestjs/common';
import { DiscoveryModule } from '@nestjs/core';
import type { PglnModuleOptions } from '../interfaces/index.js';
import { DEFAULT_CONNECTION } from '../pgln.constants.js';
import { withInstance, type InstanceExtras } from '../pgln.instance.js';
import { PGLN_MODULE_OPTIONS, type PglnModuleExtras } from '../pgln.module-definition.js';
import { PGLN_TRANSPORT } from '../pgln.transport.js';
import { getPglnTestBusToken, PglnTestBus } from './pgln-test-bus.js';

/** What `PglnTestingModule` takes: the module's options but those of a connection (there is none). */
export type PglnTestingOptions = Omit<PglnModuleOptions, 'connectionString' | 'pool' | 'listener' | 'applicationName'>;

const { ConfigurableModuleClass, OPTIONS_TYPE, ASYNC_OPTIONS_TYPE } = new ConfigurableModuleBuilder<PglnTestingOptions>({
  moduleName: 'PglnTesting',
  // The options reach PglnService under the token it injects.
  optionsInjectionToken: PGLN_MODULE_OPTIONS,
})
  .setClassMethodName('forRoot')
  .setFactoryMethodName('createPglnOptions')
  .setExtras<PglnModuleExtras>({ isGlobal: true, name: DEFAULT_CONNECTION }, (definition, extras) => ({ ...definition, global: extras.isGlobal }))
  .build();

/** What `PglnTestingModule.forRoot()` takes: options (all optional), `isGlobal` and `name`. */
export type PglnTestingModuleForRootOptions = typeof OPTIONS_TYPE;

/** What `PglnTestingModule.forRootAsync()` takes, as `PglnModule.forRootAsync()`. */
export type PglnTestingModuleAsyncOptions = typeof ASYNC_OPTIONS_TYPE;

/** The bus and its transport, which the instance's `PglnService` takes instead of node-postgres. */
function busOf(name: string): InstanceExtras {
  const busToken = getPglnTestBusToken(name);
  const bus: Provider = busToken === PglnTestBus ? PglnTestBus : { provide: busToken, useClass: PglnTestBus };
  const transport: Provider = { provide: PGLN_TRANSPORT, inject: [busToken], useFactory: (bus: PglnTestBus) => bus.transport };
  return { providers: [bus, transport], exports: [busToken] };
}

/**
 * `PglnModule` without a database, for unit tests: the same `PglnService` (discovery, ordering,
 * notifications held during a resync, schema validation, errors) on an in-memory server that a
 * {@link PglnTestBus} drives. No connection is ever opened.
 *
 * ```ts
 * const moduleRef = await Test.createTestingModule({
 *   imports: [PglnTestingModule.forRoot()],
 *   providers: [ProductsCache],
 * }).compile();
 * await moduleRef.init();                       // out-of-sync handlers ran with 'connect'
 * ```
 *
 * or in place of the application's own import: `.overrideModule(pglnImport).useModule(PglnTestingModule.forRoot())`.
 */
@Module({ imports: [DiscoveryModule] })
export class PglnTestingModule extends ConfigurableModuleClass {
  /** One in-memory instance, configured now (or with the module's defaults). */
  static forRoot(options: PglnTestingModuleForRootOptions = {}): DynamicModule {
    return withInstance('PglnTestingModule', super.forRoot(options), options.name, busOf);
  }

  /** One in-memory instance, configured by a factory, a class or an existing provider. */
  static forRootAsync(options: PglnTestingModuleAsyncOptions): DynamicModule {
    return withInstance('PglnTestingModule', super.forRootAsync(options), options?.name, busOf);
  }
}
