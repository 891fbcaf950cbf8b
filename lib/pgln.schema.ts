import type { StandardSchemaV1 } from '@standard-schema/spec';
import { PglnPayloadError } from './errors/index.js';
import { PAYLOAD_INVALID } from './pgln.messages.js';
import { isPromiseLike } from './pgln.promises.js';

/** Issues in one line: `path.to.field: message; other: message`. */
function describeIssues(issues: readonly StandardSchemaV1.Issue[]): string {
  return issues
    .map(({ message, path }) => {
      const keys = path?.map((segment) => String(typeof segment === 'object' ? segment.key : segment));
      return keys?.length ? `${keys.join('.')}: ${message}` : message;
    })
    .join('; ');
}

function outcome(result: StandardSchemaV1.Result<unknown>, channel: string, what: string): unknown {
  if (result.issues) throw new PglnPayloadError(PAYLOAD_INVALID(channel, what, describeIssues(result.issues)), channel);
  return result.value;
}

/**
 * Validates a payload with a channel's Standard Schema: the schema's output, or a
 * {@link PglnPayloadError} naming the issues. A promise only when the schema validates asynchronously.
 *
 * @param what which payload, for the message: `'Payload for'` (sending) or `'Payload received on'`
 */
export function validatePayload(schema: StandardSchemaV1, channel: string, value: unknown, what: string): unknown {
  const result = schema['~standard'].validate(value);
  return isPromiseLike(result) ? Promise.resolve(result).then((settled) => outcome(settled, channel, what)) : outcome(result, channel, what);
}
