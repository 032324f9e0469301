/** Scenario variables at run time: `$NAME` resolves to what an earlier step stored, or fails. */
import { describe, it, expect } from 'vitest';
import { resolveAddr, resolveInt, type Vars } from '../../../../../src/app/scenario/vars.js';

describe('variables', () => {
  it('resolve to their values, and refuse ones never set', () => {
    const vars: Vars = new Map<string, number | bigint>([['P', 5], ['B', 0x10_0000n]]);
    expect(resolveInt({ ref: 'P' }, vars)).toBe(5);
    expect(resolveAddr({ ref: 'B' }, vars)).toBe(0x10_0000n);
    expect(resolveAddr({ ref: 'P' }, vars)).toBe(5n);
    expect(() => resolveInt({ ref: 'X' }, vars)).toThrow(/\$X has no value/);
  });
});
