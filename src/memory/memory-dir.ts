/** Where guest RAM files are created: VSVA_MEM_DIR, else /dev/shm when present, else the OS temp dir. */
import * as fs from 'node:fs';
import * as os from 'node:os';

export function defaultMemoryDir(): string {
  if (process.env.VSVA_MEM_DIR) return process.env.VSVA_MEM_DIR;
  try {
    if (fs.statSync('/dev/shm').isDirectory()) return '/dev/shm';
  } catch {
    /* no /dev/shm */
  }
  return os.tmpdir();
}
