/**
 * Structured logging through pino. Library code logs through `logger` (or a child of it);
 * never through console. The level comes from VSVA_LOG (default 'warn' for library use) and
 * the CLI's --log-level. Logs go to stderr so that stdout stays free for command output: one
 * JSON object per line, or — when stderr is a terminal — readable lines (src/log-format.ts).
 * VSVA_LOG_FORMAT=json|pretty overrides that choice.
 */
import { pino, type Logger, type Level } from 'pino';
import { prettyDestination } from './log-format.js';

const LEVELS = new Set(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);

function levelFromEnv(): Level | 'silent' {
  const v = process.env.VSVA_LOG;
  return v && LEVELS.has(v) ? (v as Level | 'silent') : 'warn';
}

function pretty(): boolean {
  const f = process.env.VSVA_LOG_FORMAT;
  if (f === 'json') return false;
  if (f === 'pretty') return true;
  return process.stderr.isTTY === true;
}

export const logger: Logger = pino(
  {
    name: 'vsva',
    level: levelFromEnv(),
    base: { pid: process.pid },
    formatters: {
      // A logged object's own `name` (e.g. an IOASID set's) would repeat the logger's `name`
      // key in the same JSON line; it is written as `objectName` instead.
      log: (obj) => {
        if (!('name' in obj)) return obj;
        const { name, ...rest } = obj;
        return { ...rest, objectName: name };
      },
    },
  },
  pretty() ? prettyDestination(2, process.stderr.hasColors?.() === true) : pino.destination({ fd: 2, sync: true }),
);

export function setLogLevel(level: string): void {
  if (!LEVELS.has(level)) throw new Error(`unknown log level '${level}' (one of ${[...LEVELS].join(', ')})`);
  logger.level = level;
}

export function childLogger(component: string, bindings: Record<string, unknown> = {}): Logger {
  return logger.child({ component, ...bindings });
}

export type { Logger };
