import { describe, it, expect } from 'vitest';
import { makeModel } from './harness.js';
import { DMAR, FSTS, GCMD, GSTS } from '../../../../src/vtd/registers.js';
import { vsvaCapEcap, decodeEcap, vsvaRegisterFile } from '../../../../src/vtd/cap-ecap.js';
import { VCMD_REG_OFFSETS } from '../../../../src/vtd/vcmd.js';
import fc from 'fast-check';
import type { RegisterDef } from '../../../../src/vtd/registers.js';
import { RegisterFile } from '../../../../guest/vtd/register-file.js';

describe('VT-d register file', () => {
  it('reads a 32-bit register as a number and refuses to narrow a 64-bit one', () => {
    const { model } = makeModel();
    expect(model.regs.getN('FECTL')).toBe(0x8000_0000);
    expect(() => model.regs.getN('CAP')).toThrow(/EINVAL: CAP is a 64-bit register/);
    expect(() => model.regs.getN('IQA')).toThrow(/EINVAL/);
  });

  it('resets to the exposed capabilities and QEMU reset values', async () => {
    const { h } = makeModel();
    const { cap, ecap } = vsvaCapEcap({ fl5lp: true });
    expect(await h.readl(DMAR.VER)).toBe(0x30);
    expect(await h.readq(DMAR.CAP)).toBe(cap);
    expect(await h.readq(DMAR.ECAP)).toBe(ecap);
    expect(decodeEcap(ecap).fields.NEST).toBe(0n);
    expect(await h.readl(DMAR.GSTS)).toBe(0);
    for (const ctl of [DMAR.FECTL, DMAR.IECTL, DMAR.PECTL]) expect(await h.readl(ctl)).toBe(0x8000_0000);
    expect(await h.readq(VCMD_REG_OFFSETS['3.1'].VCCAP)).toBe(1n);
  });

  it('places the VCMD registers per layout and hides them (and ECAP.VCS) without VCMD', async () => {
    const m33 = makeModel({ vcmd: '3.3' });
    expect(await m33.h.readq(VCMD_REG_OFFSETS['3.3'].VCCAP)).toBe(1n);
    const none = makeModel({ vcmd: false });
    expect(decodeEcap(await none.h.readq(DMAR.ECAP)).fields.VCS).toBe(0n);
    expect(await none.h.readq(0xe00)).toBe(0n);
    await none.h.writeq(0xe10, 1n);
    expect(await none.h.readq(0xe20)).toBe(0n);
  });

  it('applies writable masks; read-only registers ignore writes', async () => {
    const { h } = makeModel();
    const cap = await h.readq(DMAR.CAP);
    await h.writeq(DMAR.CAP, 0n);
    expect(await h.readq(DMAR.CAP)).toBe(cap);
    await h.writeq(DMAR.RTADDR, (1n << 64n) - 1n);
    expect(await h.readq(DMAR.RTADDR)).toBe(0xffff_ffff_ffff_fc00n);
    await h.writeq(DMAR.IQA, (1n << 64n) - 1n);
    expect(await h.readq(DMAR.IQA)).toBe(0xffff_ffff_ffff_f807n);
    await h.writeq(DMAR.IQH, 0x100n);
    expect(await h.readq(DMAR.IQH)).toBe(0n);
  });

  it('writeWhole64 (the VCMD hot path) leaves what an 8-byte write leaves, on every 64-bit register; 32-bit ones are refused', () => {
    const defs = vsvaRegisterFile('3.1', { fl5lp: true });
    const wide = defs.filter((d) => d.width === 64);
    fc.assert(
      fc.property(fc.constantFrom(...wide), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), fc.bigInt({ min: -(1n << 64n), max: 1n << 65n }), (d, old, value) => {
        const a = new RegisterFile(defs);
        const b = new RegisterFile(defs);
        a.setDef(d, old);
        b.setDef(d, old);
        const w = a.write(d.offset, 8, value);
        expect(b.writeWhole64(d, value)).toBe(w[0]!.value);
        expect(b.read(d.offset, 8)).toBe(a.read(d.offset, 8));
        expect(b.get(d.name)).toBe(a.get(d.name));
      }),
    );
    const narrow = defs.find((d) => d.width === 32)!;
    expect(() => new RegisterFile(defs).writeWhole64(narrow, 1n)).toThrow(/EINVAL/);
  });

  it('a whole VCMD write takes the hot path with the same effect as the general one (trace on and off)', async () => {
    const plain = makeModel();
    const traced = makeModel();
    const events: unknown[] = [];
    traced.trace.on((e) => events.push(e));
    const off = VCMD_REG_OFFSETS['3.1'];
    for (const m of [plain, traced]) {
      await m.h.writeq(off.VCMD, 1n);
      expect(await m.h.readq(off.VCRSP)).toBe(1n << 8n); // PASID 1, SC 0, IP clear
      expect(m.model.regs.get('VCMD')).toBe(1n);
    }
    expect(events.some((e) => (e as { name?: string }).name === `write 0x${off.VCMD.toString(16)}`)).toBe(true);
  });

  it('accesses 64-bit registers by 32-bit halves, as a guest kernel may', async () => {
    const { h } = makeModel();
    await h.writel(DMAR.RTADDR, 0x1234_5400);
    await h.writel(DMAR.RTADDR + 4, 0xabcd);
    expect(await h.readq(DMAR.RTADDR)).toBe(0xabcd_1234_5400n);
    expect(await h.readl(DMAR.RTADDR + 4)).toBe(0xabcd);
    expect(await h.readl(DMAR.RTADDR)).toBe(0x1234_5400);
  });

  it('handles GCMD by edge and reports completion in GSTS; GCMD reads 0', async () => {
    const { h } = makeModel();
    await h.writeq(DMAR.RTADDR, 0x10_0400n);
    await h.writel(DMAR.GCMD, GCMD.SRTP);
    expect(await h.readl(DMAR.GSTS)).toBe(GSTS.RTPS);
    expect(await h.readl(DMAR.GCMD)).toBe(0);
    await h.writel(DMAR.GCMD, (GSTS.RTPS | GCMD.QIE) >>> 0);
    expect((await h.readl(DMAR.GSTS)) & GSTS.QIES).toBe(GSTS.QIES);
    await h.writel(DMAR.GCMD, (GCMD.QIE | GCMD.TE) >>> 0);
    expect(await h.readl(DMAR.GSTS)).toBe((GSTS.RTPS | GSTS.QIES | GSTS.TES) >>> 0);
    await h.writel(DMAR.GCMD, GCMD.QIE);
    expect((await h.readl(DMAR.GSTS)) & GSTS.TES).toBe(0);
  });

  it('clears FSTS error bits only by writing 1 (W1C) and keeps PPF read-only', async () => {
    const { h, model } = makeModel();
    model.faults.queueError(4);
    model.faults.record({ addr: 0x5000n, sid: 0x18, reason: 0x71, type: 2, pasid: 7 });
    expect((await h.readl(DMAR.FSTS)) & (FSTS.IQE | FSTS.PPF)).toBe(FSTS.IQE | FSTS.PPF);
    await h.writel(DMAR.FSTS, 0);
    expect((await h.readl(DMAR.FSTS)) & FSTS.IQE).toBe(FSTS.IQE);
    await h.writel(DMAR.FSTS, FSTS.IQE | FSTS.PPF);
    expect((await h.readl(DMAR.FSTS)) & (FSTS.IQE | FSTS.PPF)).toBe(FSTS.PPF);
    // The fault record: F is RW1C; clearing it clears PPF.
    const hi = await h.readq(DMAR.FRCD + 8);
    expect(hi >> 63n).toBe(1n);
    expect(Number((hi >> 40n) & 0xfffffn)).toBe(7);
    await h.writel(DMAR.FRCD + 12, 0x8000_0000);
    expect((await h.readq(DMAR.FRCD + 8)) >> 63n).toBe(0n);
    expect((await h.readl(DMAR.FSTS)) & FSTS.PPF).toBe(0);
  });

  it('records a second fault as overflow (PFO) while the only FRCD is full, and masks the fault event', async () => {
    const { h, model } = makeModel();
    await h.writel(DMAR.FECTL, 0x8000_0000);
    expect(model.faults.record({ addr: 0x1000n, sid: 0x18, reason: 0x71, type: 0 })).toBe('recorded');
    expect(model.faults.record({ addr: 0x2000n, sid: 0x18, reason: 0x71, type: 0 })).toBe('overflow');
    expect((await h.readl(DMAR.FSTS)) & FSTS.PFO).toBe(FSTS.PFO);
    expect(await h.readl(DMAR.FECTL)).toBe(0xc000_0000);
    expect(model.counters().interrupts.fault).toBe(0);
    await h.writel(DMAR.FECTL, 0);
    expect(model.counters().interrupts.fault).toBe(1);
    expect(await h.readl(DMAR.FECTL)).toBe(0);
  });
});

describe('VT-d register file: whole-register accesses (precomputed masks)', () => {
  /** The access rule of docs/design.md §3.1 for a whole register, bit by bit from the definition. */
  const reference = (d: RegisterDef, old: bigint, written: bigint): bigint =>
    BigInt.asUintN(d.width, ((old & ~d.wmask) | (written & d.wmask)) & ~(written & d.w1cmask));

  it('a write of every register, with random old and written values, follows the rule; a read hides write-only bits', () => {
    const defs = vsvaRegisterFile('3.1', { fl5lp: true });
    fc.assert(
      fc.property(fc.constantFrom(...defs), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), (d, oldRaw, valueRaw) => {
        const regs = new RegisterFile(defs);
        const old = BigInt.asUintN(d.width, oldRaw);
        regs.setDef(d, old);
        const size = d.width === 64 ? 8 : 4;
        const value = BigInt.asUintN(d.width, valueRaw);
        const [w] = regs.write(d.offset, size, value);
        expect(w!.old).toBe(old);
        expect(w!.value).toBe(reference(d, old, value));
        expect(regs.get(d.name)).toBe(w!.value);
        expect(regs.read(d.offset, size)).toBe(w!.value & ~d.womask);
      }),
      { numRuns: 2000 },
    );
  });

  it('setDef stores the value within the register width, as set does', () => {
    const defs = vsvaRegisterFile('3.1', { fl5lp: true });
    const regs = new RegisterFile(defs);
    const fectl = regs.def('FECTL');
    regs.setDef(fectl, (1n << 40n) | 0x8000_0001n);
    expect(regs.get('FECTL')).toBe(0x8000_0001n);
    regs.setDef(fectl, -1n);
    expect(regs.get('FECTL')).toBe(0xffff_ffffn);
  });
});
