import { describe, it, expect } from 'vitest';
import { IoasidCore, PasidConsumer } from '../../../../host/ioasid/index.js';
import { expectErrno } from './helpers.js';

describe('paravirtual PASID consumer API', () => {
  it('init / alloc within the IOMMU range / find / for_each / free / exit', () => {
    const core = new IoasidCore({ pasidBits: 8 });
    const pv = PasidConsumer.init(core, { min: 16, max: 31, quota: 8, name: 'vtd0' });
    const p1 = pv.alloc(0, 255, 'first');
    const p2 = pv.alloc(20, 100, 'second');
    expect([p1, p2]).toEqual([16, 20]);
    expect(pv.find(p1)).toBe('first');
    const seen: [number, unknown][] = [];
    expect(pv.forEach((id, d) => { seen.push([id, d]); })).toBe(0);
    expect(seen).toEqual([[16, 'first'], [20, 'second']]);
    expectErrno(core, 'EINVAL', () => pv.alloc(40, 50));
    pv.free(p1);
    expectErrno(core, 'ENOENT', () => pv.find(p1));
    pv.exit();
    expect(pv.active).toBe(false);
    expect(core.idInfo(p2)).toBeNull();
    expect(core.isSetValid(pv.set)).toBe(false);
    expect(core.capacity.available).toBe(255);
    expectErrno(core, 'EINVAL', () => pv.alloc(0, 255));
  });

  it('for_each stops at the first non-zero return and returns it', () => {
    const core = new IoasidCore({ pasidBits: 8 });
    const pv = PasidConsumer.init(core, { quota: 8 });
    for (let i = 0; i < 4; i++) pv.alloc(1, 255);
    const visited: number[] = [];
    expect(pv.forEach((id) => { visited.push(id); return id === 2 ? -16 : 0; })).toBe(-16);
    expect(visited).toEqual([1, 2]);
  });

  it('a consumer cannot free or find another consumer’s PASIDs', () => {
    const core = new IoasidCore({ pasidBits: 8 });
    const a = PasidConsumer.init(core, { quota: 4 });
    const b = PasidConsumer.init(core, { quota: 4 });
    const pa = a.alloc(1, 255);
    expectErrno(core, 'EACCES', () => b.free(pa));
    expectErrno(core, 'EACCES', () => b.find(pa));
  });

  it('exit leaves IDs other users still hold pending until their last put', () => {
    const core = new IoasidCore({ pasidBits: 8 });
    const pv = PasidConsumer.init(core, { quota: 4 });
    const p = pv.alloc(1, 255);
    core.get(null, p, 'iommu');
    pv.exit();
    expect(core.idInfo(p)).toMatchObject({ state: 'free-pending', refs: 1 });
    expect(core.put(null, p, 'iommu')).toBe(true);
    expect(core.isSetValid(pv.set)).toBe(false);
  });
});
