/** SQLSTATEs that retrying cannot fix: class 28 (authentication), 3D000 (database does not exist). */
const FATAL_SQLSTATE = /^(28...|3D000)$/;

/** Client-side errors that mean the settings are wrong, not that the server is away. */
const FATAL_CLIENT_ERROR =
  /password must be a string|does not support SSL|SELF_SIGNED|UNABLE_TO_VERIFY|CERT_|ERR_TLS_CERT/i;

/**
 * Whether a connection error is one retrying cannot fix, so startup should fail at once:
 * wrong credentials, an unknown user or database, a TLS or authentication set-up mismatch.
 * Anything else (refused, reset, timed out, DNS, a server starting up or in recovery) is retried.
 */
export function isFatalAtStartup(error: unknown): boolean {
  const { code, message } = (error ?? {}) as { code?: unknown; message?: unknown };
  if (typeof code === 'string' && (FATAL_SQLSTATE.test(code) || FATAL_CLIENT_ERROR.test(code))) return true;
  return typeof message === 'string' && FATAL_CLIENT_ERROR.test(message);
}

/** An error in one line: its message, with the SQLSTATE or system code when it has one. */
export function describeError(error: unknown): string {
  const { code, message } = (error ?? {}) as { code?: unknown; message?: unknown };
  const text = typeof message === 'string' && message ? message : String(error);
  return typeof code === 'string' && !text.includes(code) ? `${text} (${code})` : text;
}
