/**
 * The memory directory of a program that runs both halves through the harness (startHost and
 * startGuest: the demo, scenarios, benchmarks, experiments) when guest RAM must be announced by
 * path — no native addon, or the 'pread' memory backend asked for (docs/reliability.md §5.1).
 * One private directory per process, mode 0700 (mkdtemp), on /dev/shm when present, else the
 * OS temp directory; created when the first such host starts, removed when the process exits.
 * The harness's hosts allow it (--allow-memory-paths) and the guests of the same process create
 * their RAM files in it, unless the environment names others (VSVA_ALLOW_MEMORY_PATHS,
 * VSVA_MEM_DIR).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

let dir: string | undefined;

export function harnessMemoryDir(): string {
  if (dir !== undefined && fs.existsSync(dir)) return dir;
  let base = os.tmpdir();
  try {
    if (fs.statSync('/dev/shm').isDirectory()) base = '/dev/shm';
  } catch {
    /* no /dev/shm */
  }
  const made = fs.mkdtempSync(path.join(base, `vsva-harness-${process.pid}-`));
  if (dir === undefined) process.once('exit', () => fs.rmSync(made, { recursive: true, force: true }));
  dir = made;
  return made;
}

/** The directory if a host of this process allows it already (harnessMemoryDir was called), else undefined. */
export function existingHarnessMemoryDir(): string | undefined {
  return dir !== undefined && fs.existsSync(dir) ? dir : undefined;
}
