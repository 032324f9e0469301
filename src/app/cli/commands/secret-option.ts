/**
 * Where `vsva host` takes a secret (the monitor token, the dashboard token) from: a file
 * (`--…-token-file F`, the safe form), the environment (`VSVA_…_TOKEN`), or the command line
 * (`--…-token T`, still accepted, but any local user can read it in /proc/PID/cmdline: see
 * proc(5), /proc/[pid]/cmdline). docs/reliability.md §4.1 lists them.
 */
import * as fs from 'node:fs';
import { fail } from '../../../errors.js';

export interface SecretSources {
  /** What the option names, for messages: 'monitor token'. */
  what: string;
  /** The value given on the command line. */
  inline?: string | undefined;
  /** A file holding the value (one line; surrounding white space is ignored). */
  file?: string | undefined;
  /** The environment variable to read when neither option is given. */
  envName: string;
  env?: NodeJS.ProcessEnv;
}

/**
 * The secret, or undefined when no source gives one. EINVAL: both the inline and the file form
 * were given, or the file is empty; ENOENT / EACCES: the file cannot be read.
 */
export function resolveSecret(src: SecretSources): string | undefined {
  if (src.inline !== undefined && src.file !== undefined) fail('EINVAL', `${src.what}: give it inline or from a file, not both`);
  if (src.file !== undefined) {
    let text: string;
    try {
      text = fs.readFileSync(src.file, 'utf8');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code === 'EACCES' ? 'EACCES' : 'ENOENT';
      fail(code, `${src.what}: cannot read ${src.file}: ${(e as Error).message}`);
    }
    const value = text.trim();
    if (value.length === 0) fail('EINVAL', `${src.what}: ${src.file} is empty`);
    return value;
  }
  if (src.inline !== undefined) return src.inline;
  const fromEnv = (src.env ?? process.env)[src.envName];
  return fromEnv === undefined || fromEnv === '' ? undefined : fromEnv;
}
