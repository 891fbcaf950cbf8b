import 'reflect-metadata';
import type { INestApplication, ModuleMetadata, Type } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { PglnModule, PglnService, type PglnModuleOptions } from '../../lib/index.js';
import { databaseUrl, unique } from './database.js';
import { CapturingLogger } from './logs.js';
import { TcpProxy } from './tcp-proxy.js';

/** A test application with its logger, service and the application_name of its connections. */
export interface TestApp {
  app: INestApplication;
  pgln: PglnService;
  logs: CapturingLogger;
  /** `applicationName` given to the module: the LISTEN connection is `${appName}-listener`. */
  appName: string;
  get<T>(type: Type<T>): T;
}

/**
 * Builds, without initialising, a Nest application that imports `PglnModule.forRoot()` against
 * the test server plus `providers` / `controllers` / `imports`. Every app gets its own
 * applicationName, so a test can find (and kill) exactly its own backends. Reconnects are fast.
 */
export async function buildTestApp(
  metadata: ModuleMetadata = {},
  options: Partial<PglnModuleOptions> = {},
): Promise<TestApp> {
  const appName = options.applicationName ?? unique('pgln');
  const logs = new CapturingLogger();
  const connection = options.pool ? {} : { connectionString: databaseUrl() };
  const moduleRef = await Test.createTestingModule({
    ...metadata,
    imports: [
      PglnModule.forRoot({
        ...connection,
        reconnect: { initialDelayMs: 20, maxDelayMs: 200 },
        ...options,
        applicationName: appName,
      }),
      ...(metadata.imports ?? []),
    ],
  })
    .setLogger(logs)
    .compile();
  const app = moduleRef.createNestApplication({ logger: logs });
  return { app, pgln: app.get(PglnService), logs, appName, get: (type) => app.get(type) };
}

/** {@link buildTestApp}, then `app.init()`; an app whose init fails is closed before the error is rethrown. */
export async function createTestApp(
  metadata: ModuleMetadata = {},
  options: Partial<PglnModuleOptions> = {},
): Promise<TestApp> {
  const built = await buildTestApp(metadata, options);
  try {
    await built.app.init();
  } catch (error) {
    await built.app.close();
    throw error;
  }
  return built;
}

/** `app.init()`, then `app.close()`: resolves with the error init failed with, or undefined if it succeeded. */
export async function initFailure(built: TestApp): Promise<unknown> {
  const failure = await built.app.init().then(
    () => undefined,
    (error: unknown) => error,
  );
  await built.app.close();
  return failure;
}

/** Options that route the LISTEN connection through `proxy`. */
export function throughProxy(proxy: TcpProxy): Partial<PglnModuleOptions> {
  return { listener: { host: '127.0.0.1', port: proxy.port } };
}

/**
 * A fresh proxy to the test server for every test of the suite, started before each test and
 * stopped after it: `let proxy: TcpProxy; proxyForEachTest((started) => (proxy = started));`
 */
export function proxyForEachTest(use: (proxy: TcpProxy) => void): void {
  let proxy: TcpProxy;
  beforeEach(async () => {
    proxy = await TcpProxy.forUrl(databaseUrl()).start();
    use(proxy);
  });
  afterEach(() => proxy.stop());
}
