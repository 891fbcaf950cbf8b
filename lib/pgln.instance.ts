import type { DynamicModule, InjectionToken, Provider } from '@nestjs/common';
import { PglnOptionsError } from './errors/index.js';
import { DEFAULT_CONNECTION, PGLN_CONNECTION_NAME } from './pgln.constants.js';
import { CONNECTION_NAME_INVALID } from './pgln.messages.js';
import { PglnExplorer } from './pgln.explorer.js';
import { PglnService } from './pgln.service.js';
import { getPglnToken } from './pgln.tokens.js';

/** What a module adds to an instance besides its service: providers, and which of them it exports. */
export interface InstanceExtras {
  readonly providers: readonly Provider[];
  readonly exports: readonly InjectionToken[];
}

/**
 * Adds one instance to the module `forRoot` / `forRootAsync` built: its name, the explorer, its
 * {@link PglnService} under its token, and `extras` (`nestjs-pgln/testing`'s bus and transport).
 * A name that is not a non-empty string fails with a {@link PglnOptionsError} naming `moduleName`.
 */
export function withInstance(
  moduleName: string,
  module: DynamicModule,
  name: unknown = DEFAULT_CONNECTION,
  extras: (name: string) => InstanceExtras = () => ({ providers: [], exports: [] }),
): DynamicModule {
  if (typeof name !== 'string' || name.trim() === '') {
    throw new PglnOptionsError(CONNECTION_NAME_INVALID(moduleName, name === null ? 'null' : typeof name === 'string' ? JSON.stringify(name) : typeof name));
  }
  const token = getPglnToken(name);
  const service: Provider = token === PglnService ? PglnService : { provide: token, useClass: PglnService };
  const { providers, exports } = extras(name);
  return {
    ...module,
    providers: [...(module.providers ?? []), { provide: PGLN_CONNECTION_NAME, useValue: name }, PglnExplorer, ...providers, service],
    exports: [...(module.exports ?? []), token, ...exports],
  };
}
