/**
 * What the soak reads from the operating system about the host and about vsva's files (Linux
 * proc(5)): a process's RSS and open descriptors, and the vsva files in /dev/shm and the
 * temporary directory (guest RAM files, sockets, state directories).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export function rssBytes(pid: number): number | null {
  try {
    const m = fs.readFileSync(`/proc/${pid}/status`, 'utf8').match(/^VmRSS:\s+(\d+)\s+kB/m);
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

export function openFds(pid: number): number | null {
  try {
    return fs.readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return null;
  }
}

/** What each open descriptor of a process refers to (readlink of /proc/PID/fd/N), sorted. */
export function fdTargets(pid: number): string[] {
  try {
    return fs
      .readdirSync(`/proc/${pid}/fd`)
      .map((n) => {
        try {
          return fs.readlinkSync(`/proc/${pid}/fd/${n}`).replace(/\[\d+\]$/, '[…]');
        } catch {
          return '?';
        }
      })
      .sort();
  } catch {
    return [];
  }
}

/** Entries of `b` beyond those of `a` (multiset difference). */
export function extra(a: readonly string[], b: readonly string[]): string[] {
  const left = new Map<string, number>();
  for (const x of a) left.set(x, (left.get(x) ?? 0) + 1);
  const out: string[] = [];
  for (const x of b) {
    const n = left.get(x) ?? 0;
    if (n > 0) left.set(x, n - 1);
    else out.push(x);
  }
  return out;
}

/**
 * vsva's entries in /dev/shm and the temporary directory that belong to this soak: names that
 * carry the id of one of its processes (vsva names RAM files, sockets and temporary directories
 * `vsva-<what>-<pid>-<random>`) or start with one of `prefixes`. Other users of the machine
 * (test runs beside the soak) are not counted.
 */
export function vsvaFiles(pids: ReadonlySet<number>, prefixes: readonly string[]): string[] {
  const out: string[] = [];
  for (const dir of ['/dev/shm', os.tmpdir()]) {
    let names: string[] = [];
    try {
      names = fs.readdirSync(dir);
    } catch {
      continue;
    }
    for (const n of names) {
      if (!/vsva/i.test(n)) continue;
      const ids = n.match(/\d+/g) ?? [];
      if (ids.some((id) => pids.has(Number(id))) || prefixes.some((p) => n.startsWith(p))) out.push(path.join(dir, n));
    }
  }
  return out.sort();
}

/** Bytes of the regular files among `files` (what leftover RAM files hold). */
export function bytesOf(files: readonly string[]): number {
  let n = 0;
  for (const f of files) {
    try {
      const s = fs.statSync(f);
      if (s.isFile()) n += s.size;
    } catch {
      /* gone meanwhile */
    }
  }
  return n;
}
