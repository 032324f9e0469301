/**
 * The virtual VT-d as a Linux guest driver sees it — register and guest-memory accesses only,
 * through the GuestHandle of an in-process guest and host — checked against values of the VT-d
 * spec (rev. 5.10): GCMD/GSTS of unsupported features (§11.4.4), IQH on QI disable (§11.4.9.1),
 * primary fault overflow (§7.2.1), FPD (§9.4–§9.6), the scalable-mode fault reasons of the
 * context / PASID directory / PASID table walk and of second-level entries (§7.1.3,
 * Appendix A), and faults recorded by the time the DMA that caused them returns.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHost, type StartedHost } from '../../../src/app/harness/start-host.js';
import { startGuest, type StartedGuest } from '../../../src/app/harness/start-guest.js';
import { PageAllocator } from '../../../guest/driver/page-allocator.js';
import { VtdDriver } from '../../../guest/driver/vtd-driver.js';
import { decodeCap, decodeEcap } from '../../../src/vtd/cap-ecap.js';
import { FaultReason } from '../../../src/vtd/fault.js';
import { decode, encode } from '../../../src/vtd/layout.js';
import { PASID_DIR_ENTRY, PASID_TABLE_ENTRY, PGTT } from '../../../src/vtd/pasid-entry.js';
import { CC_G, IOTLB_G, InvDescType, encodeDescriptor } from '../../../src/vtd/descriptors.js';
import { smContextEntryLayout } from '../../../src/vtd/root-context.js';
import { DMAR, FSTS, GCMD, GSTS } from '../../../src/vtd/registers.js';
import { UAPIS, type Uapi } from './helpers.js';

const MEM = 64 * 1024 * 1024;
const PF2 = '00:04.0'; // attached without PRE: translation faults are recorded
const RID2 = 0x20;
/** A device the driver never attaches: its context entry stays not present. */
const UNATTACHED = '00:05.0';
const FRCD0_HI = DMAR.FRCD + 8;
/** An address no first-level table maps. */
const UNMAPPED = 0x7f00_dead_0000n;

let host: StartedHost;
/** A host in another process: its FAULT and its DEVICE_DMA reply arrive on two sockets. */
let remoteHost: StartedHost;
beforeAll(async () => {
  [host, remoteHost] = await Promise.all([startHost({ spawn: false }), startHost()]);
});
afterAll(async () => {
  await Promise.all([host.close(), remoteHost.close()]);
});

interface Vm {
  vm: StartedGuest;
  alloc: PageAllocator;
  drv: VtdDriver;
}

/** The host uAPI of the VMs the tests of the running block start (each block runs on both). */
let vmUapi: Uapi = 'vfio-sva';

async function withVm(name: string, body: (v: Vm) => Promise<void>, opts: { pdts?: number; remote?: boolean } = {}): Promise<void> {
  const vm = await startGuest({ socket: (opts.remote === true ? remoteHost : host).socket, name: `${name}-${vmUapi}`, viommu: 'vtd', memory: MEM, devices: [{ bdf: PF2 }, { bdf: UNATTACHED }], uapi: vmUapi });
  try {
    const alloc = new PageAllocator(vm, { base: 0x10_0000n, size: MEM - 0x10_0000 });
    const drv = await VtdDriver.init(vm, alloc, opts.pdts !== undefined ? { pdts: opts.pdts } : {});
    await drv.attachDevice(PF2);
    await body({ vm, alloc, drv });
  } finally {
    await vm.close();
  }
}

/** FRCD0 as the guest reads it right now: F and FR. */
async function frcd0(vm: StartedGuest): Promise<{ f: boolean; reason: number }> {
  const hi = await vm.readq(FRCD0_HI);
  return { f: hi >> 63n === 1n, reason: Number((hi >> 32n) & 0xffn) };
}

async function readU64(vm: StartedGuest, gpa: bigint): Promise<bigint> {
  return new DataView((await vm.memread(gpa, 8)).buffer.slice(0)).getBigUint64(0, true);
}

async function writeU64(vm: StartedGuest, gpa: bigint, v: bigint): Promise<void> {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, v, true);
  await vm.memwrite(gpa, b);
}

/** GPA of a device's scalable-mode context entry, found as a driver would: RTADDR → root entry → context table. */
async function contextEntryGpa(vm: StartedGuest, rid: number): Promise<bigint> {
  const root = (await vm.readq(DMAR.RTADDR)) & ~0xfffn;
  const devfn = rid & 0xff;
  const rootEntry = await readU64(vm, root + BigInt((rid >> 8) * 16) + (devfn >= 0x80 ? 8n : 0n));
  return (rootEntry & ~0xfffn) + BigInt((devfn & 0x7f) * 32);
}

async function pasidDirGpa(vm: StartedGuest, rid: number): Promise<bigint> {
  return (await readU64(vm, await contextEntryGpa(vm, rid))) & ~0xfffn;
}

/** A DMA read with a PASID that must fault; returns the reason dma() reported. */
async function faultingRead(vm: StartedGuest, pasid: number, addr = UNMAPPED): Promise<number> {
  const r = await vm.dma(PF2, { pasid, addr, length: 8 });
  expect(r.ok).toBe(false);
  return r.ok ? -1 : r.fault.reason;
}

describe.each(UAPIS)('VT-d registers as a Linux driver programs them (%s uAPI)', (uapi) => {
  beforeAll(() => {
    vmUapi = uapi;
  });
  it('GCMD commands of features CAP/ECAP do not report (IR, AFL, RWBF) leave GSTS unchanged', async () => {
    await withVm('gcmd-unexposed', async ({ vm }) => {
      expect(decodeCap(await vm.readq(DMAR.CAP)).fields.AFL).toBe(0n);
      expect(decodeEcap(await vm.readq(DMAR.ECAP)).fields.IR).toBe(0n);
      const sts = await vm.readl(DMAR.GSTS);
      expect((sts & (GSTS.TES | GSTS.QIES | GSTS.RTPS)) >>> 0).toBe((GSTS.TES | GSTS.QIES | GSTS.RTPS) >>> 0);
      // Linux: gcmd = readl(GSTS) & ~one-shot bits (iommu.c `iommu_set_root_entry`), then gcmd | cmd.
      const keep = (sts & ~(GCMD.SRTP | GCMD.SFL | GCMD.WBF | GCMD.SIRTP)) >>> 0;
      expect(decodeCap(await vm.readq(DMAR.CAP)).fields.RWBF).toBe(0n);
      for (const cmd of [GCMD.WBF, GCMD.IRE, GCMD.SIRTP, GCMD.CFI, GCMD.SFL, GCMD.EAFL, (GCMD.IRE | GCMD.SIRTP | GCMD.CFI | GCMD.SFL | GCMD.EAFL) >>> 0]) {
        await vm.writel(DMAR.GCMD, (keep | cmd) >>> 0);
        expect((await vm.readl(DMAR.GSTS)) >>> 0).toBe(sts >>> 0);
      }
      expect((await vm.readl(DMAR.GSTS)) & (GSTS.IRES | GSTS.IRTPS | GSTS.CFIS | GSTS.FLS | GSTS.AFLS)).toBe(0);
    });
  });

  it('IQH reads 0 once queued invalidation is disabled, and QI works again after re-enabling', async () => {
    await withVm('iqh-disable', async ({ vm, drv }) => {
      await drv.submit([]);
      const iqh = await vm.readq(DMAR.IQH);
      expect(iqh).not.toBe(0n);
      // Linux dmar_disable_qi: wait until IQH == IQT, clear QIE, wait for QIES to clear.
      expect(await vm.readq(DMAR.IQT)).toBe(iqh);
      const sts = await vm.readl(DMAR.GSTS);
      await vm.writel(DMAR.GCMD, (sts & ~GCMD.QIE & ~GCMD.SRTP) >>> 0);
      expect((await vm.readl(DMAR.GSTS)) & GSTS.QIES).toBe(0);
      expect(await vm.readq(DMAR.IQH)).toBe(0n);
      // __dmar_enable_qi: IQT = 0, IQA, QIE; descriptors run from 0 again.
      await vm.writeq(DMAR.IQT, 0n);
      await vm.writel(DMAR.GCMD, (sts | GCMD.QIE) >>> 0);
      expect((await vm.readl(DMAR.GSTS)) & GSTS.QIES).toBe(GSTS.QIES);
      expect(await vm.readq(DMAR.IQH)).toBe(0n);
    });
  });
});

describe.each(UAPIS)('primary fault logging (%s uAPI)', (uapi) => {
  beforeAll(() => {
    vmUapi = uapi;
  });
  it('records no fault while FSTS.PFO is set, even after the F bit was cleared; clearing PFO resumes recording', async () => {
    await withVm('pfo', async ({ vm, drv }) => {
      const pasid = await drv.allocPasid();
      expect(await faultingRead(vm, pasid)).toBe(FaultReason.SPT_2_PASID_ENTRY_NOT_PRESENT);
      expect((await frcd0(vm)).f).toBe(true);
      await faultingRead(vm, pasid, UNMAPPED + 0x1000n); // CAP.NFR + 1 = 1 record: overflow
      expect((await vm.readl(DMAR.FSTS)) & FSTS.PFO).toBe(FSTS.PFO);
      // Software clears F only (not PFO): the next fault is still not recorded.
      await vm.writel(FRCD0_HI + 4, 0x8000_0000);
      expect((await frcd0(vm)).f).toBe(false);
      await faultingRead(vm, pasid, UNMAPPED + 0x2000n);
      expect((await frcd0(vm)).f).toBe(false);
      expect((await vm.readl(DMAR.FSTS)) & (FSTS.PPF | FSTS.PFO)).toBe(FSTS.PFO);
      // Clearing PFO resumes recording.
      await vm.writel(DMAR.FSTS, FSTS.PFO);
      await faultingRead(vm, pasid, UNMAPPED + 0x3000n);
      const faults = await drv.readFaults();
      expect(faults).toHaveLength(1);
      expect(faults[0]).toMatchObject({ addr: UNMAPPED + 0x3000n, pasid, sid: RID2, reason: FaultReason.SPT_2_PASID_ENTRY_NOT_PRESENT });
    });
  });

  it('FPD in a PASID directory entry suppresses recording (directory entry present or not), and FPD in a PASID table entry with P clear', async () => {
    await withVm('dir-fpd', async ({ vm, drv }) => {
      const dir = await pasidDirGpa(vm, RID2);
      // PASID 0x40..0x7f: directory entry 1 with a PASID table whose entries are all clear, FPD = 1.
      const pasid = 0x45;
      await drv.pasidEntryGpa(PF2, pasid);
      const de = await readU64(vm, dir + 8n);
      expect(decode(PASID_DIR_ENTRY, [de]).fields.P).toBe(1n);
      await writeU64(vm, dir + 8n, de | 2n);
      expect(await faultingRead(vm, pasid)).toBe(FaultReason.SPT_2_PASID_ENTRY_NOT_PRESENT);
      expect((await frcd0(vm)).f).toBe(false);
      // Directory entry 2 not present, FPD = 1: SPD.2 is qualified, so it is suppressed too.
      await writeU64(vm, dir + 16n, 2n);
      expect(await faultingRead(vm, 0x85)).toBe(FaultReason.SPD_2_PASID_DIR_ENTRY_NOT_PRESENT);
      expect((await frcd0(vm)).f).toBe(false);
      expect((await vm.readl(DMAR.FSTS)) & (FSTS.PPF | FSTS.PFO)).toBe(0);
      // FPD in a PASID table entry whose P is clear suppresses too (evaluated irrespective of P).
      await writeU64(vm, dir + 8n, de);
      const entry = await drv.pasidEntryGpa(PF2, pasid);
      await writeU64(vm, entry, 2n);
      expect(await faultingRead(vm, pasid)).toBe(FaultReason.SPT_2_PASID_ENTRY_NOT_PRESENT);
      expect((await frcd0(vm)).f).toBe(false);
      // Without FPD the same fault is recorded.
      await writeU64(vm, entry, 0n);
      await faultingRead(vm, pasid);
      expect(await frcd0(vm)).toEqual({ f: true, reason: FaultReason.SPT_2_PASID_ENTRY_NOT_PRESENT });
    });
  });
});

describe.each(UAPIS)('scalable-mode fault reasons of the guest context / PASID walk (%s uAPI)', (uapi) => {
  beforeAll(() => {
    vmUapi = uapi;
  });
  it('a PASID whose directory entry is not present faults with SPD.2 (0x51)', async () => {
    await withVm('spd2', async ({ vm, drv }) => {
      const pasid = 0x1000; // directory entry 64: never written
      expect(await faultingRead(vm, pasid)).toBe(FaultReason.SPD_2_PASID_DIR_ENTRY_NOT_PRESENT);
      const faults = await drv.readFaults();
      expect(faults).toEqual([expect.objectContaining({ reason: FaultReason.SPD_2_PASID_DIR_ENTRY_NOT_PRESENT, pasid, sid: RID2, addr: UNMAPPED })]);
    });
  });

  it('a PASID beyond what the context entry PDTS covers faults with SCT.7 (0x46)', async () => {
    await withVm(
      'sct7',
      async ({ vm, drv }) => {
        const ctx = decode(smContextEntryLayout(48), [await readU64(vm, await contextEntryGpa(vm, RID2)), 0n, 0n, 0n]);
        expect(ctx.fields.PDTS).toBe(0n); // 2^7 directory entries: PASIDs below 8192
        expect(await faultingRead(vm, 8192)).toBe(FaultReason.SCT_7_PASID_ABOVE_PDTS);
        expect(await frcd0(vm)).toEqual({ f: true, reason: FaultReason.SCT_7_PASID_ABOVE_PDTS });
        await drv.readFaults();
        // The last PASID PDTS covers walks on: its directory entry is not present.
        expect(await faultingRead(vm, 8191)).toBe(FaultReason.SPD_2_PASID_DIR_ENTRY_NOT_PRESENT);
        expect(await frcd0(vm)).toEqual({ f: true, reason: FaultReason.SPD_2_PASID_DIR_ENTRY_NOT_PRESENT });
      },
      { pdts: 0 },
    );
  });

  it('after a context-cache flush, a request with PASID to a context entry with PASIDE = 0 faults with SCT.6 (0x45)', async () => {
    await withVm('sct6', async ({ vm, drv }) => {
      const pasid = await drv.allocPasid();
      const gpa = await contextEntryGpa(vm, RID2);
      const words = [];
      for (let i = 0; i < 4; i++) words.push(await readU64(vm, gpa + BigInt(i * 8)));
      const layout = smContextEntryLayout(48);
      const ctx = decode(layout, words);
      expect(ctx.fields.PASIDE).toBe(1n);
      const cleared = encode(layout, { ...ctx.fields, PASIDE: 0n });
      for (let i = 0; i < 4; i++) await writeU64(vm, gpa + BigInt(i * 8), cleared[i]!);
      // Linux: device-selective context-cache invalidation after changing a context entry.
      await drv.submit([encodeDescriptor(InvDescType.CC, { G: CC_G.DEVICE, SID: RID2, DID: 1 }, 1)]);
      expect(await faultingRead(vm, pasid)).toBe(FaultReason.SCT_6_PASIDE_CLEAR);
      expect(await frcd0(vm)).toEqual({ f: true, reason: FaultReason.SCT_6_PASIDE_CLEAR });
    });
  });
});

describe.each(UAPIS)('reserved and unreadable guest structures (%s uAPI)', (uapi) => {
  beforeAll(() => {
    vmUapi = uapi;
  });
  it('a PASID directory entry with a reserved bit faults with SPD.3 (0x52); a PASID table outside guest RAM with SPT.1 (0x58)', async () => {
    await withVm('spd3-spt1', async ({ vm, drv }) => {
      const dir = await pasidDirGpa(vm, RID2);
      await writeU64(vm, dir + 24n, (0x20_0000n) | 1n | (1n << 5n)); // entry 3 (PASIDs 0xc0..0xff): bit 5 reserved
      expect(await faultingRead(vm, 0xc1)).toBe(FaultReason.SPD_3_PASID_DIR_ENTRY_RESERVED);
      expect(await frcd0(vm)).toEqual({ f: true, reason: FaultReason.SPD_3_PASID_DIR_ENTRY_RESERVED });
      await drv.readFaults();
      await writeU64(vm, dir + 32n, BigInt(MEM) | 1n); // entry 4: table beyond guest RAM
      expect(await faultingRead(vm, 0x101)).toBe(FaultReason.SPT_1_PASID_ENTRY_ACCESS);
      expect(await frcd0(vm)).toEqual({ f: true, reason: FaultReason.SPT_1_PASID_ENTRY_ACCESS });
    });
  });

  it('a context entry with a reserved bit faults with SCT.3 (0x42) once the context cache is flushed', async () => {
    await withVm('sct3', async ({ vm, drv }) => {
      const pasid = await drv.allocPasid();
      const gpa = await contextEntryGpa(vm, RID2);
      await writeU64(vm, gpa + 16n, 1n); // qw2 is reserved
      await drv.submit([encodeDescriptor(InvDescType.CC, { G: CC_G.DEVICE, SID: RID2, DID: 1 }, 1)]);
      for (const req of [{ addr: 0x1000n, length: 8 }, { pasid, addr: UNMAPPED, length: 8 }]) {
        const r = await vm.dma(PF2, req);
        expect(r.ok ? 0 : r.fault.reason).toBe(FaultReason.SCT_3_CONTEXT_ENTRY_RESERVED);
        expect(await frcd0(vm)).toEqual({ f: true, reason: FaultReason.SCT_3_CONTEXT_ENTRY_RESERVED });
        await drv.readFaults();
      }
    });
  });
});

describe.each(UAPIS)('context entry not present (%s uAPI)', (uapi) => {
  beforeAll(() => {
    vmUapi = uapi;
  });
  it('requests with and without PASID from a device whose context entry is not present fault with SCT.2 (0x41)', async () => {
    await withVm('sct2', async ({ vm, drv }) => {
      const pasid = await drv.allocPasid();
      // With CAP.CM = 1 the not-present root entry seen at TE may stay cached (VT-d §6.1) until
      // a context-cache invalidation covers the device: a global one, as Linux issues at init.
      await drv.submit([encodeDescriptor(InvDescType.CC, { G: CC_G.GLOBAL }, 1)]);
      for (const req of [{ addr: 0x1000n, length: 8 }, { pasid, addr: UNMAPPED, length: 8 }]) {
        const r = await vm.dma(UNATTACHED, req);
        expect(r.ok ? 0 : r.fault.reason).toBe(FaultReason.SCT_2_CONTEXT_ENTRY_NOT_PRESENT);
        expect(await frcd0(vm)).toEqual({ f: true, reason: FaultReason.SCT_2_CONTEXT_ENTRY_NOT_PRESENT });
        await drv.readFaults();
      }
    });
  });
});

describe.each(UAPIS)('second-level shadowing (PGTT = 2): reserved bits in guest entries (%s uAPI)', (uapi) => {
  beforeAll(() => {
    vmUapi = uapi;
  });
  it('a reserved bit in an SL entry of every level and page size faults with SSL.3 (0x7A); a good leaf translates', async () => {
    await withVm('ssl3', async ({ vm, alloc, drv }) => {
      const [l4, l3, l2, l1, l1b, l2b, l3b, data] = [await alloc.alloc(1), await alloc.alloc(1), await alloc.alloc(1), await alloc.alloc(1), await alloc.alloc(1), await alloc.alloc(1), await alloc.alloc(1), await alloc.alloc(1)];
      const RW = 3n;
      const PS = 0x80n;
      const HIGH_RSVD = 1n << 50n; // above the 48-bit host address width
      await writeU64(vm, l4, l3 | RW);
      await writeU64(vm, l4 + 8n, l3b | RW | PS); // L4 entry: PS is reserved → [512 GiB, 1 TiB)
      await writeU64(vm, l3, l2 | RW);
      await writeU64(vm, l3 + 8n, 0x4000_0000n | RW | PS | (1n << 20n)); // 1 GiB leaf, bit 20 reserved → [1 GiB, 2 GiB)
      await writeU64(vm, l3 + 16n, l2b | RW | HIGH_RSVD); // L3 non-leaf → [2 GiB, 3 GiB)
      await writeU64(vm, l2, l1 | RW);
      await writeU64(vm, l2 + 8n, 0x20_0000n | RW | PS | (1n << 13n)); // 2 MiB leaf, bit 13 reserved → [2 MiB, 4 MiB)
      await writeU64(vm, l2 + 16n, l1b | RW | HIGH_RSVD); // L2 non-leaf → [4 MiB, 6 MiB)
      await writeU64(vm, l1, data | RW | HIGH_RSVD); // 4 KiB leaf → [0, 4 KiB)
      await writeU64(vm, l1 + 8n, data | RW); // good leaf → [4 KiB, 8 KiB)
      await vm.memwrite(data, new TextEncoder().encode('second level'));
      const pasid = await drv.allocPasid();
      const did = 5;
      await drv.writePasidEntry(PF2, pasid, encode(PASID_TABLE_ENTRY, { P: 1, PGTT: PGTT.SLT, AW: 2, SLPTPTR: l4 >> 12n, DID: did }));
      await drv.pasidFlushCaches(did, pasid);

      const good = await vm.dma(PF2, { pasid, addr: 0x1000n, length: 12 });
      expect(good.ok && new TextDecoder().decode(good.data!)).toBe('second level');
      for (const addr of [0x0n, 0x20_0000n, 0x30_0000n, 0x40_0000n, 0x4000_0000n, 0x8000_0000n, 0x80_0000_0000n]) {
        expect({ addr, reason: await faultingRead(vm, pasid, addr) }).toEqual({ addr, reason: FaultReason.SSL_3_SL_ENTRY_RESERVED });
        expect(await frcd0(vm)).toEqual({ f: true, reason: FaultReason.SSL_3_SL_ENTRY_RESERVED });
        await drv.readFaults();
      }
      // Fixing the leaf and a page-selective IOTLB flush of it (Linux qi_flush_iotlb, second level) make it translate.
      await writeU64(vm, l1, data | RW);
      await drv.submit([encodeDescriptor(InvDescType.IOTLB, { G: IOTLB_G.PSI, DID: did, ADDR: 0n, AM: 0 }, 1)]);
      const fixed = await vm.dma(PF2, { pasid, addr: 0n, length: 12 });
      expect(fixed.ok).toBe(true);
    });
  });
});

/** 50 faulting DMAs; after each, FSTS and FRCD are read at once — no polling. */
async function faultsVisibleWhenDmaReturns(remote: boolean): Promise<void> {
  await withVm(
    `fault-timing-${remote}`,
    async ({ vm, drv }) => {
      const pasid = await drv.allocPasid();
      for (let i = 0; i < 50; i++) {
        const addr = UNMAPPED + BigInt(i) * 0x1000n;
        expect(await faultingRead(vm, pasid, addr)).toBe(FaultReason.SPT_2_PASID_ENTRY_NOT_PRESENT);
        expect((await vm.readl(DMAR.FSTS)) & FSTS.PPF).toBe(FSTS.PPF);
        expect(await frcd0(vm)).toEqual({ f: true, reason: FaultReason.SPT_2_PASID_ENTRY_NOT_PRESENT });
        const faults = await drv.readFaults();
        expect(faults).toEqual([expect.objectContaining({ addr, pasid, sid: RID2 })]);
      }
    },
    { remote },
  );
}

describe.each(UAPIS)('fault timing (%s uAPI)', (uapi) => {
  beforeAll(() => {
    vmUapi = uapi;
  });
  it('when dma() resolves with a fault, FRCD and FSTS already hold it (50 times in a row, host in process)', () => faultsVisibleWhenDmaReturns(false));
  it('when dma() resolves with a fault, FRCD and FSTS already hold it (50 times in a row, host in another process)', () => faultsVisibleWhenDmaReturns(true));
});
