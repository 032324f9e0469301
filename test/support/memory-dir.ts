/**
 * The directory the test run's guests create file-backed RAM in and its hosts allow in
 * SET_MEM_TABLE's path form (VSVA_MEM_DIR and VSVA_ALLOW_MEMORY_PATHS, set for every test by
 * vitest.config.ts; docs/testing.md). A host accepts only a directory its user owns with mode
 * 0700 (host/memory/memory-path-dir.ts), so it is made so: under /dev/shm when present (a memory
 * filesystem, as in production), else the OS temp directory; one per uid.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export function testMemoryDir(): string {
  let base = os.tmpdir();
  try {
    if (fs.statSync('/dev/shm').isDirectory()) base = '/dev/shm';
  } catch {
    /* no /dev/shm */
  }
  const dir = path.join(base, `vsva-test-ram-${process.getuid?.() ?? 0}`);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  fs.chmodSync(dir, 0o700);
  return dir;
}
