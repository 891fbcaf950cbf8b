import { Inject } from '@nestjs/common';
import { PglnOptionsError } from '../errors/index.js';
import { CONNECTION_NAME_INVALID } from '../pgln.messages.js';
import { getPglnToken } from '../pgln.tokens.js';

/**
 * Injects the {@link PglnService} of the instance `PglnModule.forRoot({ name })` created; with no
 * name, the default instance's (the same as injecting `PglnService` by type).
 *
 * ```ts
 * constructor(@InjectPgln('audit') private readonly audit: PglnService) {}
 * ```
 */
export function InjectPgln(name?: string): PropertyDecorator & ParameterDecorator {
  if (name !== undefined && (typeof name !== 'string' || name.trim() === '')) {
    throw new PglnOptionsError(CONNECTION_NAME_INVALID('InjectPgln', typeof name === 'string' ? JSON.stringify(name) : String(name)));
  }
  return Inject(getPglnToken(name));
}
