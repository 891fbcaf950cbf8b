import { DEFAULT_CONNECTION } from './pgln.constants.js';
import { PglnService } from './pgln.service.js';

/**
 * The injection token of an instance's {@link PglnService}: the class itself for the default
 * instance, a string for a named one. For `moduleRef.get(getPglnToken('audit'))` and custom
 * providers; in constructors, `@InjectPgln('audit')` is shorter.
 *
 * @param name the `name` given to `PglnModule.forRoot()` / `forRootAsync()`
 */
export function getPglnToken(name: string = DEFAULT_CONNECTION): string | typeof PglnService {
  return name === DEFAULT_CONNECTION ? PglnService : `PglnService(${name})`;
}
