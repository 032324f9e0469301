/**
 * Where `vsva host` takes its tokens from (src/app/cli/commands/secret-option.ts) and how it resolves
 * --socket-group (group-id.ts): file, environment, command line; their errors.
 */
import { describe, it, expect, afterEach } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { resolveSecret } from '../../../../../../src/app/cli/commands/secret-option.js';
import { groupId } from '../../../../../../src/app/cli/commands/group-id.js';

const dirs: string[] = [];
function tmp(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'vsva-secret-'));
  dirs.push(d);
  return d;
}
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

describe('resolveSecret', () => {
  it('reads a file (white space trimmed), else the environment, else the inline value', () => {
    const f = path.join(tmp(), 't');
    fs.writeFileSync(f, '  from-the-file-0123456789\n');
    expect(resolveSecret({ what: 't', file: f, envName: 'X', env: { X: 'env' } })).toBe('from-the-file-0123456789');
    expect(resolveSecret({ what: 't', envName: 'X', env: { X: 'from-env' } })).toBe('from-env');
    expect(resolveSecret({ what: 't', inline: 'inline', envName: 'X', env: { X: 'from-env' } })).toBe('inline');
    expect(resolveSecret({ what: 't', envName: 'X', env: {} })).toBeUndefined();
    expect(resolveSecret({ what: 't', envName: 'X', env: { X: '' } })).toBeUndefined();
  });

  it('EINVAL for both forms or an empty file, ENOENT for a missing file', () => {
    const f = path.join(tmp(), 'empty');
    fs.writeFileSync(f, '\n');
    expect(() => resolveSecret({ what: 't', inline: 'a', file: f, envName: 'X' })).toThrow(/EINVAL/);
    expect(() => resolveSecret({ what: 't', file: f, envName: 'X' })).toThrow(/EINVAL/);
    expect(() => resolveSecret({ what: 't', file: path.join(tmp(), 'missing'), envName: 'X' })).toThrow(/ENOENT/);
  });
});

describe('groupId', () => {
  it('takes a number as is and looks a name up in the group file; ENOENT for an unknown one', () => {
    const f = path.join(tmp(), 'group');
    fs.writeFileSync(f, 'root:x:0:\nvsva:x:4242:alice,bob\n');
    expect(groupId('17', f)).toBe(17);
    expect(groupId('vsva', f)).toBe(4242);
    expect(() => groupId('nobody-here', f)).toThrow(/ENOENT/);
    expect(() => groupId('vsva', path.join(tmp(), 'missing'))).toThrow(/ENOENT/);
  });
});
