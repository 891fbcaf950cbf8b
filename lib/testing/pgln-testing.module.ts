import { ConfigurableModuleBuilder, Module, type DynamicModule, type Provider } from '@nestjs/common';
import { DiscoveryModule } from '@nestjs/core';
import { PglnOptionsError } from '../errors/index.js';
import type { PglnModuleOptions } from '../interfaces/index.js';
import { DEFAULT_CONNECTION, PGLN_CONNECTION_NAME } from '../pgln.constants.js';
import { PglnExplorer } from '../pgln.explorer.js';
import { CONNECTION_NAME_INVALID } from '../pgln.messages.js';
import { PGLN_MODULE_OPTIONS, type PglnModuleExtras } from '../pgln.module-definition.js';
import { PglnService } from '../pgln.service.js';
import { getPglnToken } from '../pgln.tokens.js';
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

/** A lost connection is back at once in tests, whatever the backoff the application configures. */
const TEST_RECONNECT = { initialDelayMs: 1, maxDelayMs: 10 };

/** Adds one instance's bus, its transport and its service, under their tokens. */
function withInstance(module: DynamicModule, name: unknown = DEFAULT_CONNECTION): DynamicModule {
  if (typeof name !== 'string' || name.trim() === '') {
    throw new PglnOptionsError(
      CONNECTION_NAME_INVALID('PglnTestingModule', name === null ? 'null' : typeof name === 'string' ? JSON.stringify(name) : typeof name),
    );
  }
  const token = getPglnToken(name);
  const busToken = getPglnTestBusToken(name);
  // PglnService is built here rather than by class: its options and transport are this module's.
  const service: Provider = {
    provide: token,
    inject: [PGLN_MODULE_OPTIONS, PglnExplorer, busToken],
    useFactory: (options: PglnTestingOptions, explorer: PglnExplorer, bus: PglnTestBus) =>
      new PglnService({ ...options, reconnect: { ...TEST_RECONNECT, ...options?.reconnect } }, explorer, name, bus.transport),
  };
  const bus: Provider = busToken === PglnTestBus ? PglnTestBus : { provide: busToken, useClass: PglnTestBus };
  return {
    ...module,
    providers: [
      ...(module.providers ?? []),
      { provide: PGLN_CONNECTION_NAME, useValue: name },
      PglnExplorer,
      bus,
      service,
    ],
    exports: [...(module.exports ?? []), token, busToken],
  };
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
    return withInstance(super.forRoot(options), options.name);
  }

  /** One in-memory instance, configured by a factory, a class or an existing provider. */
  static forRootAsync(options: PglnTestingModuleAsyncOptions): DynamicModule {
    return withInstance(super.forRootAsync(options), options?.name);
  }
}
