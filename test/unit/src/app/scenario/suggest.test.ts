/** "Did you mean …?": edit distance with swaps, and the closest candidate within reach. */
import { describe, it, expect } from 'vitest';
import { closest, editDistance } from '../../../../../src/app/scenario/suggest.js';

describe('editDistance', () => {
  it('counts insertions, deletions, substitutions and neighbour swaps as one edit each', () => {
    expect(editDistance('levels', 'levels')).toBe(0);
    expect(editDistance('level', 'levels')).toBe(1);
    expect(editDistance('lenght', 'length')).toBe(1);
    expect(editDistance('pasdi', 'pasid')).toBe(1);
    expect(editDistance('vm', 'va')).toBe(1);
    expect(editDistance('', 'abc')).toBe(3);
    expect(editDistance('kitten', 'sitting')).toBe(3);
  });
});

describe('closest', () => {
  const keys = ['vm', 'name', 'levels', 'label', 'error'];
  it('picks the nearest candidate, ignoring case', () => {
    expect(closest('level', keys)).toBe('levels');
    expect(closest('NAME', keys)).toBe('name');
    expect(closest('allocate', ['alloc', 'free'])).toBe('alloc');
  });
  it('suggests nothing when no candidate is within reach', () => {
    expect(closest('colour', keys)).toBeUndefined();
    expect(closest('xyz', keys)).toBeUndefined();
    expect(closest('a', [])).toBeUndefined();
  });
  it('allows one edit for short words, two for longer ones', () => {
    expect(closest('vn', ['vm'])).toBe('vm');
    expect(closest('ab', ['vm'])).toBeUndefined();
    expect(closest('devcei', ['device'])).toBe('device');
  });
});
