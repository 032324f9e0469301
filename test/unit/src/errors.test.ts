import { describe, expect, it } from 'vitest';
import { Errno, VsvaError, fail, isVsvaError, toNegErrno } from '../../../src/errors.js';

describe('VsvaError', () => {
  it('prefixes the message with the errno name and keeps the unprefixed text in detail', () => {
    const e = new VsvaError('EINVAL', 'pasid 0 is RID_PASID');
    expect(e.message).toBe('EINVAL: pasid 0 is RID_PASID');
    expect(e.errno).toBe(Errno.EINVAL);
    expect(e.detail).toEqual({ message: 'pasid 0 is RID_PASID' });
    expect(e.detail.fields).toBeUndefined();
  });

  it('carries structured fields in detail', () => {
    const e = new VsvaError('ENOSPC', 'no PASID left', { min: 1, max: 0xfffff });
    expect(e.detail).toEqual({ message: 'no PASID left', fields: { min: 1, max: 0xfffff } });
    expect(e.message).toBe('ENOSPC: no PASID left');
  });

  it('withContext puts a context before the detail, never the errno prefix twice', () => {
    const e = new VsvaError('ECONNRESET', 'connection lost', { fd: 3 }).withContext('PASID_ALLOC');
    expect(e).toBeInstanceOf(VsvaError);
    expect(e.code).toBe('ECONNRESET');
    expect(e.message).toBe('ECONNRESET: PASID_ALLOC: connection lost');
    expect(e.detail).toEqual({ message: 'PASID_ALLOC: connection lost', fields: { fd: 3 } });
  });

  it('fromErrno maps a wire errno back, unknown values to EIO', () => {
    expect(VsvaError.fromErrno(-Errno.EBUSY, 'x').code).toBe('EBUSY');
    expect(VsvaError.fromErrno(-9999, 'x').code).toBe('EIO');
    expect(VsvaError.fromErrno(-9999, 'x').detail.message).toBe('x');
  });

  it('fail throws, isVsvaError and toNegErrno classify', () => {
    let caught: unknown;
    try {
      fail('EPERM', 'no');
    } catch (e) {
      caught = e;
    }
    expect(isVsvaError(caught, 'EPERM')).toBe(true);
    expect(isVsvaError(caught, 'EIO')).toBe(false);
    expect(toNegErrno(caught)).toBe(-Errno.EPERM);
    expect(toNegErrno(new Error('plain'))).toBe(-Errno.EIO);
  });
});
