/**
 * `--socket-group G`: a group name or number → its gid. Names are looked up in /etc/group
 * (group(5)); Node has no getgrnam. ENOENT: no such group.
 */
import * as fs from 'node:fs';
import { fail } from '../../../errors.js';

export function groupId(group: string, groupFile = '/etc/group'): number {
  if (/^\d+$/.test(group)) return Number(group);
  let text = '';
  try {
    text = fs.readFileSync(groupFile, 'utf8');
  } catch {
    fail('ENOENT', `socket group '${group}': ${groupFile} cannot be read; give the group id`);
  }
  for (const line of text.split('\n')) {
    const [name, , gid] = line.split(':');
    if (name === group && gid !== undefined && /^\d+$/.test(gid)) return Number(gid);
  }
  fail('ENOENT', `socket group '${group}' is not in ${groupFile}`);
}
