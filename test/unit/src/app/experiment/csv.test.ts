import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { csvField, parseCsv, toCsv } from '../../../../../src/app/experiment/csv.js';
import { VsvaError } from '../../../../../src/errors.js';

describe('CSV writer', () => {
  it('writes a header and one row per record in column order', () => {
    const text = toCsv(['scheme', 'vms', 'p50_us', 'ok'], [
      { scheme: 'vcmd', vms: 4, p50_us: 12.3456789, ok: true },
      { vms: 1, scheme: 'spid', ok: false },
    ]);
    expect(text).toBe('scheme,vms,p50_us,ok\nvcmd,4,12.3457,true\nspid,1,,false\n');
  });
  it('quotes fields with commas, quotes and newlines (RFC 4180)', () => {
    expect(csvField('a,b')).toBe('"a,b"');
    expect(csvField('say "hi"')).toBe('"say ""hi"""');
    expect(csvField('two\nlines')).toBe('"two\nlines"');
    expect(csvField(NaN)).toBe('');
    expect(csvField(123n)).toBe('123');
  });
  it('rejects a field that is not a column, and duplicate columns (EINVAL)', () => {
    const err = (f: () => unknown): string | undefined => {
      try {
        f();
      } catch (e) {
        return (e as VsvaError).code;
      }
      return undefined;
    };
    expect(err(() => toCsv(['a'], [{ a: 1, b: 2 }]))).toBe('EINVAL');
    expect(err(() => toCsv(['a', 'a'], []))).toBe('EINVAL');
    expect(err(() => toCsv([], []))).toBe('EINVAL');
  });
  it('round-trips arbitrary strings through parseCsv (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.string(), fc.string()), { maxLength: 20 }), (rows) => {
        const text = toCsv(['x', 'y'], rows.map(([x, y]) => ({ x, y })));
        const back = parseCsv(text);
        expect(back.columns).toEqual(['x', 'y']);
        // A row of two empty strings is a line holding just ',' — still two fields.
        expect(back.rows).toEqual(rows.map(([x, y]) => [x, y]));
      }),
      { numRuns: 200 },
    );
  });
  it('parseCsv rejects ragged rows', () => {
    expect(() => parseCsv('a,b\n1\n')).toThrow(/1 fields/);
  });
});
