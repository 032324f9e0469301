/**
 * Structured logging through pino. Library code logs through `logger` (or a child of it);
 * never through console. The level comes from VSVA_LOG (default 'warn' for library use) and
 * the CLI's --log-level. Logs go to stderr so that stdout stays free for command output.
 */
import { pino, type Logger, type Level } from 'pino';

const LEVELS = new Set(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);

function levelFromEnv(): Level | 'silent' {
  const v = process.env.VSVA_LOG;
  return v && LEVELS.has(v) ? (v as Level | 'silent') : 'warn';
}

export const logger: Logger = pino(
  { name: 'vsva', level: levelFromEnv(), base: { pid: process.pid } },
  pino.destination({ fd: 2, sync: true }),
);

export function setLogLevel(level: string): void {
  if (!LEVELS.has(level)) throw new Error(`unknown log level '${level}' (one of ${[...LEVELS].join(', ')})`);
  logger.level = level;
}

export function childLogger(component: string, bindings: Record<string, unknown> = {}): Logger {
  return logger.child({ component, ...bindings });
}

export type { Logger };
