/**
 * Guest-RAM file names (guest/memory/guest-ram.ts, docs/reliability.md "Guest RAM files"): the
 * name goes once both halves hold the file (releaseName) and the bytes stay; relink gives a
 * positioned-I/O store a fresh name holding the same bytes (for a path-form announcement to a
 * restarted host); memfds and buffers have no name to release; files are created exclusively.
 */
import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { GuestRam } from '../../../../guest/memory/guest-ram.js';
import { nativeAvailable } from '../../../../src/native/native.js';
import { expectedErrnoOf } from '../../../support/error-code.js';

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vsva-ram-names-'));
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('GuestRam names', () => {
  it('positioned-I/O file: releaseName removes the name, the bytes stay; relink makes a new file with them', () => {
    const ram = GuestRam.create(64 * 1024, { backing: 'file', dir });
    try {
      const first = ram.path;
      ram.write(0x3000, Buffer.from('hello'));
      expect(ram.named).toBe(true);
      ram.releaseName();
      expect(ram.named).toBe(false);
      expect(fs.readdirSync(dir)).toEqual([]);
      expect(Buffer.from(ram.read(0x3000, 5)).toString()).toBe('hello');
      ram.relink();
      expect(ram.named).toBe(true);
      expect(ram.path).not.toBe(first);
      expect(path.dirname(ram.path)).toBe(dir);
      const onDisk = fs.readFileSync(ram.path);
      expect(onDisk.length).toBe(64 * 1024);
      expect(onDisk.subarray(0x3000, 0x3005).toString()).toBe('hello');
      ram.write(0x8000, Buffer.from('after'));
      expect(fs.readFileSync(ram.path).subarray(0x8000, 0x8005).toString()).toBe('after');
    } finally {
      ram.close();
    }
    expect(fs.readdirSync(dir)).toEqual([]);
  });

  it.runIf(nativeAvailable())('mapped file: releaseName keeps the mapping; memfds and buffers have no name (relink EOPNOTSUPP)', () => {
    const mapped = GuestRam.create(64 * 1024, { backing: 'file', access: 'mapped', dir });
    const memfd = GuestRam.create(64 * 1024, { backing: 'memfd' });
    const inproc = GuestRam.create(64 * 1024, { backing: 'inproc' });
    try {
      mapped.write(0, Buffer.from('x'));
      mapped.releaseName();
      expect(fs.readdirSync(dir)).toEqual([]);
      expect(mapped.read(0, 1)[0]).toBe(0x78);
      for (const r of [memfd, inproc]) {
        expect(r.named).toBe(false);
        r.releaseName();
        expect(expectedErrnoOf(() => r.relink())).toBe('EOPNOTSUPP');
      }
    } finally {
      mapped.close();
      memfd.close();
      inproc.close();
    }
  });
});
