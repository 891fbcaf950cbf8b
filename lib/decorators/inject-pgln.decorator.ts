import { Inject } from '@nestjs/common';
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
  return Inject(getPglnToken(name));
}
