/**
 * How log lines look on a terminal: pino writes one JSON object per line; on a TTY each line is
 * rewritten as `HH:MM:SS.mmm LEVEL component [vm] message key=value …`, the level coloured
 * with node's util.styleText. Off a TTY (files, pipes, CI) the JSON lines are kept as they are.
 * A destination written in-process, synchronously: no pino-pretty dependency and no transport
 * worker thread.
 */
import * as fs from 'node:fs';
import { styleText } from 'node:util';

const LEVEL_NAMES: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
const LEVEL_STYLE: Record<number, Parameters<typeof styleText>[0]> = { 10: 'gray', 20: 'gray', 30: 'green', 40: 'yellow', 50: 'red', 60: ['red', 'bold'] };
/** Keys printed in the line's fixed part (or dropped), not as key=value. */
const FIXED = new Set(['level', 'time', 'pid', 'hostname', 'name', 'component', 'vm', 'msg']);

function clock(ms: number): string {
  const d = new Date(ms);
  const p = (n: number, w = 2): string => String(n).padStart(w, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

function value(v: unknown): string {
  if (typeof v === 'string') return /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v);
  return JSON.stringify(v) ?? String(v);
}

/** One pino JSON line as a terminal line (the input back unchanged when it is not JSON). */
export function prettyLine(json: string, color: boolean): string {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json.endsWith('\n') ? json : `${json}\n`;
  }
  const level = typeof o.level === 'number' ? o.level : 30;
  const style = (s: Parameters<typeof styleText>[0], t: string): string => (color ? styleText(s, t) : t);
  const head = [
    style('gray', clock(typeof o.time === 'number' ? o.time : Date.now())),
    style(LEVEL_STYLE[level] ?? 'white', (LEVEL_NAMES[level] ?? String(level)).padEnd(5)),
    ...(typeof o.component === 'string' ? [style('cyan', o.component)] : []),
    ...(o.vm !== undefined ? [`[${String(o.vm)}]`] : []),
  ].join(' ');
  const err = o.err as { type?: string; message?: string; stack?: string } | undefined;
  const rest = Object.entries(o)
    .filter(([k]) => !FIXED.has(k) && k !== 'err')
    .map(([k, v]) => `${style('gray', `${k}=`)}${value(v)}`);
  const msg = typeof o.msg === 'string' ? o.msg : '';
  const errText = err ? ` ${style('red', err.message ?? err.type ?? 'error')}` : '';
  return `${head} ${msg}${errText}${rest.length ? ` ${rest.join(' ')}` : ''}\n`;
}

/** A pino destination that writes pretty lines to `fd` synchronously. */
export function prettyDestination(fd: number, color: boolean): { write(line: string): void } {
  return {
    write(line: string): void {
      fs.writeSync(fd, prettyLine(line, color));
    },
  };
}
