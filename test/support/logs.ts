import type { LoggerService } from '@nestjs/common';

/** A Nest logger that keeps every line, for tests that assert on what the module logs. */
export class CapturingLogger implements LoggerService {
  readonly lines: { level: string; message: string; context?: string }[] = [];

  private add(level: string, message: unknown, rest: unknown[]): void {
    const context = typeof rest[rest.length - 1] === 'string' ? (rest[rest.length - 1] as string) : undefined;
    const extra = rest.slice(0, -1).filter((part) => typeof part === 'string');
    this.lines.push({ level, message: [String(message), ...extra].join('\n'), context });
  }

  log = (message: unknown, ...rest: unknown[]) => this.add('log', message, rest);
  error = (message: unknown, ...rest: unknown[]) => this.add('error', message, rest);
  warn = (message: unknown, ...rest: unknown[]) => this.add('warn', message, rest);
  debug = (message: unknown, ...rest: unknown[]) => this.add('debug', message, rest);
  verbose = (message: unknown, ...rest: unknown[]) => this.add('verbose', message, rest);

  /** Every message at `level` (all levels if omitted). */
  messages(level?: string): string[] {
    return this.lines.filter((line) => !level || line.level === level).map((line) => line.message);
  }

  /** Everything logged, as one string (to assert that something never appears). */
  text(): string {
    return this.lines.map((line) => `${line.level} ${line.message}`).join('\n');
  }
}
