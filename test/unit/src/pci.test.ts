import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { formatBdf, parseBdf } from '../../../src/pci.js';

describe('PCI requester IDs', () => {
  it('parses bus:dev.fn into bus<<8 | dev<<3 | fn', () => {
    expect(parseBdf('00:03.0')).toBe(0x18);
    expect(parseBdf('0000:01:00.1')).toBe(0x101);
    expect(parseBdf('ff:1f.7')).toBe(0xffff);
  });
  it('rejects malformed addresses with EINVAL', () => {
    for (const bad of ['', '0:3.0', '00:20.0', '00:03.8', '0001:00:03.0', '00:03']) {
      expect(() => parseBdf(bad)).toThrow(/EINVAL/);
    }
  });
  it('format and parse are inverse for every 16-bit requester ID', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 0xffff }), (rid) => parseBdf(formatBdf(rid)) === rid));
  });
});
