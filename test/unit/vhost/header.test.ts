import { describe, it, expect } from 'vitest';
import {
  decodeHeader, encodeHeader, requestFlags, REPLY_FLAGS, VHOST_USER_HDR_SIZE, checkHeaderFlagsAndSize,
  MAX_REQUEST_PAYLOAD, MAX_REPLY_PAYLOAD, DEVICE_DMA_MAX_LENGTH, DeviceDmaHeaderStruct,
} from '../../../vhost/index.js';
import { isVsvaError } from '../../../src/errors.js';

describe('message header (vhost-user framing)', () => {
  it('is 12 bytes: request, flags, size, little-endian', () => {
    expect(VHOST_USER_HDR_SIZE).toBe(12);
    // GET_FEATURES request, version 1, no payload.
    expect(encodeHeader({ request: 1, flags: requestFlags(false), size: 0 }).toString('hex')).toBe('010000000100000000000000');
    // SET_PROTOCOL_FEATURES with NEED_REPLY, u64 payload.
    expect(encodeHeader({ request: 16, flags: requestFlags(true), size: 8 }).toString('hex')).toBe('10000000' + '09000000' + '08000000');
    // A reply to VM_SETUP (0x100) with a 40-byte payload: flags exactly VERSION|REPLY.
    expect(encodeHeader({ request: 0x100, flags: REPLY_FLAGS, size: 40 }).toString('hex')).toBe('00010000' + '05000000' + '28000000');
    expect(encodeHeader({ request: 0x1f0, flags: 1, size: 0x101000 }).toString('hex')).toBe('f0010000' + '01000000' + '00101000');
  });

  it('decodes what it encodes', () => {
    const h = { request: 0xdeadbeef, flags: 0x9, size: 0x12345 };
    expect(decodeHeader(encodeHeader(h))).toEqual(h);
    expect(decodeHeader(Buffer.from('0f000000050000000800000099', 'hex'))).toEqual({ request: 15, flags: 5, size: 8 });
  });

  it('rejects a bad version, reserved flag bits and oversize with the fatal errnos', () => {
    const code = (f: () => void): string | undefined => {
      try {
        f();
      } catch (e) {
        return isVsvaError(e) ? e.code : 'other';
      }
      return undefined;
    };
    expect(code(() => checkHeaderFlagsAndSize(0x0, 0, MAX_REQUEST_PAYLOAD))).toBe('EPROTO');
    expect(code(() => checkHeaderFlagsAndSize(0x2, 0, MAX_REQUEST_PAYLOAD))).toBe('EPROTO');
    expect(code(() => checkHeaderFlagsAndSize(0x3, 0, MAX_REQUEST_PAYLOAD))).toBe('EPROTO');
    expect(code(() => checkHeaderFlagsAndSize(0x11, 0, MAX_REQUEST_PAYLOAD))).toBe('EPROTO');
    expect(code(() => checkHeaderFlagsAndSize(0x8000_0001, 0, MAX_REQUEST_PAYLOAD))).toBe('EPROTO');
    expect(code(() => checkHeaderFlagsAndSize(0x1, MAX_REQUEST_PAYLOAD + 1, MAX_REQUEST_PAYLOAD))).toBe('E2BIG');
    expect(code(() => checkHeaderFlagsAndSize(0xd, MAX_REQUEST_PAYLOAD, MAX_REQUEST_PAYLOAD))).toBeUndefined();
    expect(MAX_REQUEST_PAYLOAD).toBe(1024 * 1024 + 4096);
    expect(MAX_REPLY_PAYLOAD).toBe(64 * 1024 * 1024);
  });
  it('leaves room for the largest DEVICE_DMA write (header + 1 MiB of data)', () => {
    expect(DeviceDmaHeaderStruct.size + DEVICE_DMA_MAX_LENGTH).toBeLessThanOrEqual(MAX_REQUEST_PAYLOAD);
  });
});
