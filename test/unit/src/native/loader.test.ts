/**
 * Loading the addon never throws: without it (here forced with VSVA_NATIVE=off) vsva reports why,
 * warns once, and the wrappers refuse with EOPNOTSUPP. Runs whether or not the addon is built.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { findPackageRoot } from '../../../../src/native/native.js';

afterEach(() => {
  vi.unstubAllEnvs();
  vi.restoreAllMocks();
  vi.resetModules();
});

describe('native addon loading', () => {
  it('finds the package root from src/native and from a compiled dist/ copy, skipping other package.json files', () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vsva-root-'));
    try {
      fs.writeFileSync(path.join(tmp, 'package.json'), JSON.stringify({ name: 'vsva' }));
      fs.mkdirSync(path.join(tmp, 'dist', 'src', 'native'), { recursive: true });
      fs.writeFileSync(path.join(tmp, 'dist', 'package.json'), JSON.stringify({ type: 'module' }));
      expect(findPackageRoot(path.join(tmp, 'dist', 'src', 'native'))).toBe(tmp);
      expect(findPackageRoot(path.join(tmp, 'src', 'native'))).toBe(tmp);
      expect(findPackageRoot(os.tmpdir())).toBeUndefined();
    } finally {
      fs.rmSync(tmp, { recursive: true });
    }
    expect(fs.existsSync(path.join(findPackageRoot(import.meta.dirname)!, 'native', 'vsva_native.c'))).toBe(true);
  });

  it('without the addon: unavailable with a reason, one warning, EOPNOTSUPP from the wrappers, no mappings', async () => {
    vi.stubEnv('VSVA_NATIVE', 'off');
    vi.resetModules();
    const { logger } = await import('../../../../src/log.js');
    const warn = vi.fn();
    vi.spyOn(logger, 'child').mockReturnValue({ warn } as never);
    const native = await import('../../../../src/native/native.js');
    expect(native.nativeAvailable()).toBe(false);
    expect(native.loadError).toBe('disabled by VSVA_NATIVE=off');
    expect(native.mappingCount()).toBe(0);
    expect(() => native.memfdCreate('x', 4096)).toThrow(/EOPNOTSUPP: native addon unavailable: disabled by VSVA_NATIVE=off/);
    expect(() => native.sendFds(3, new Uint8Array(1))).toThrow(expect.objectContaining({ code: 'EOPNOTSUPP' }));
    expect(() => native.pageSize()).toThrow(expect.objectContaining({ code: 'EOPNOTSUPP' }));
    native.warnNativeUnavailable();
    native.warnNativeUnavailable();
    expect(warn).toHaveBeenCalledTimes(1);
    expect(warn.mock.calls[0]![0]).toEqual({ reason: 'disabled by VSVA_NATIVE=off' });
  });

  it('errnoCode names errnos as os.constants does; isNativeError checks the code', async () => {
    const { errnoCode, isNativeError } = await import('../../../../src/native/native.js');
    expect(errnoCode(os.constants.errno.ECONNRESET)).toBe('ECONNRESET');
    expect(errnoCode(9)).toBe('EBADF');
    expect(errnoCode(99999)).toBe('E99999');
    const e = Object.assign(new Error('fstat: Bad file descriptor'), { code: 'EBADF' });
    expect(isNativeError(e)).toBe(true);
    expect(isNativeError(e, 'EBADF')).toBe(true);
    expect(isNativeError(e, 'EINVAL')).toBe(false);
    expect(isNativeError(new Error('plain'))).toBe(false);
  });
});
