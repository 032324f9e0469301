/**
 * The checks a host's --socket path gets before listen(2), so that a mistake is reported as what
 * it is: listen on a path in a missing directory fails with EACCES in libuv's wording, and on a
 * regular file with EADDRINUSE, neither of which names the problem.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fail } from '../../errors.js';

/**
 * Throws ENOENT when the socket's directory does not exist (or is not a directory), EEXIST when
 * something other than a socket is at the path. An existing socket is left to listen() (a live
 * one gives EADDRINUSE).
 */
export function checkSocketPath(socket: string): void {
  const dir = path.dirname(path.resolve(socket));
  let dirStat: fs.Stats;
  try {
    dirStat = fs.statSync(dir);
  } catch {
    fail('ENOENT', `socket ${socket}: directory ${dir} does not exist`);
  }
  if (!dirStat.isDirectory()) fail('ENOENT', `socket ${socket}: ${dir} is not a directory`);
  let st: fs.Stats;
  try {
    st = fs.lstatSync(socket);
  } catch {
    return; // nothing there yet: the normal case
  }
  if (!st.isSocket()) fail('EEXIST', `socket ${socket}: a ${st.isDirectory() ? 'directory' : 'file'} that is not a socket is already at this path`);
}
