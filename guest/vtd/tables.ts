/**
 * Walks of the guest's scalable-mode translation structures in guest RAM: root table → context
 * entry → PASID directory → PASID table entry, with the spec's checks and fault reasons
 * (VT-d spec rev. 5.10 §9.2 "Scalable-mode Root Entry", §9.4 "Scalable-Mode Context-Entry", §9.5
 * "Scalable-Mode PASID Directory Entry", §9.6 "Scalable-Mode PASID Table Entry"; fault reasons of
 * §7.1.3 "Fault Conditions and Remapping Hardware Behavior for Various Requests").
 *
 * Every function reads guest RAM only and never throws for guest-controlled data: a failed
 * read (address outside RAM) is the matching access-error fault (0x38 root, 0x40 context,
 * 0x50 PASID directory, 0x58 PASID table).
 */
import type { GuestRam } from '../memory/guest-ram.js';
import { FaultReason } from '../../src/vtd/fault.js';
import { decode, wordsFromBytes } from '../../src/vtd/layout.js';
import {
  PASID_DIR_ENTRY,
  PASID_ENTRY_SIZE,
  PASID_ENTRY_WORDS,
  PGTT,
  checkPasidEntry,
  pasidDirIndex,
  pasidTableIndex,
  type PasidEntryCheck,
} from '../../src/vtd/pasid-entry.js';
import {
  ROOT_ENTRY_SIZE,
  SM_CONTEXT_ENTRY_SIZE,
  VTD_DEVFN_CHECK_MASK,
  pasidDirEntries,
  pasidLimitForPdts,
  smContextEntryLayout,
  smContextIndex,
  smRootEntryLayout,
} from '../../src/vtd/root-context.js';
import { SAGAW } from '../../src/vtd/cap-ecap.js';

/** Host address width of the virtual IOMMU (CAP.MGAW + 1 = 48). */
export const VTD_HAW = 48;

/** PASID-entry checks of this virtual IOMMU: NEST is not exposed (PGTT 3 invalid), SAGAW 48-bit, FL5LP. */
export const PASID_ENTRY_CHECKS = { allowedPgtt: [PGTT.FLT, PGTT.SLT, PGTT.PT], sagaw: SAGAW.AW_48BIT, fl5lp: true } as const;

export type Walk<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly reason: number; readonly why: string };

/** A present, well-formed scalable-mode context entry. */
export interface ContextInfo {
  readonly rid: number;
  readonly fpd: boolean;
  readonly dte: boolean;
  readonly paside: boolean;
  readonly pre: boolean;
  readonly pdts: number;
  /** PASIDDIRPTR (GPA of the PASID directory). */
  readonly dirPtr: bigint;
  readonly ridPasid: number;
  readonly words: readonly bigint[];
}

/** A PASID table entry as read, with the directory entry's FPD and the spec check's verdict. */
export interface PasidEntryRead {
  readonly pasid: number;
  /** GPA of the 64-byte entry. */
  readonly gpa: bigint;
  readonly words: readonly bigint[];
  readonly dirFpd: boolean;
  readonly check: PasidEntryCheck;
}

function fault<T>(reason: number, why: string): Walk<T> {
  return { ok: false, reason, why };
}

function readWords(ram: GuestRam, gpa: bigint, count: number): bigint[] | undefined {
  if (gpa < 0n || gpa + BigInt(count * 8) > BigInt(ram.size)) return undefined;
  return wordsFromBytes(ram.read(Number(gpa), count * 8), 0, count);
}

/**
 * The context entry of `rid` under the root table at `rootTable` (scalable mode).
 * Faults: 0x38/0x39/0x3a root entry access/P/reserved; 0x40/0x41/0x42 context entry
 * access/P/reserved.
 */
export function readContext(ram: GuestRam, rootTable: bigint, rid: number): Walk<ContextInfo> {
  const bus = (rid >> 8) & 0xff;
  const devfn = rid & 0xff;
  const root = readWords(ram, rootTable + BigInt(bus * ROOT_ENTRY_SIZE), 2);
  if (root === undefined) return fault(FaultReason.SRT_1_ROOT_ENTRY_ACCESS, `root entry of bus ${bus} is outside guest RAM`);
  const r = decode(smRootEntryLayout(VTD_HAW), root);
  const upper = (devfn & VTD_DEVFN_CHECK_MASK) !== 0;
  if ((upper ? r.fields.UP : r.fields.LP) === 0n) return fault(FaultReason.SRT_2_ROOT_ENTRY_NOT_PRESENT, `root entry of bus ${bus} has ${upper ? 'UP' : 'LP'} clear`);
  if (r.reserved.length > 0) return fault(FaultReason.SRT_3_ROOT_ENTRY_RESERVED, `root entry of bus ${bus} has reserved bits set`);
  const ctp = (upper ? r.fields.UCTP : r.fields.LCTP) << 12n;
  const ctxWords = readWords(ram, ctp + BigInt(smContextIndex(devfn) * SM_CONTEXT_ENTRY_SIZE), 4);
  if (ctxWords === undefined) return fault(FaultReason.SCT_1_CONTEXT_ENTRY_ACCESS, `context entry of ${rid.toString(16)} is outside guest RAM`);
  const c = decode(smContextEntryLayout(VTD_HAW), ctxWords);
  if (c.fields.P === 0n) return fault(FaultReason.SCT_2_CONTEXT_ENTRY_NOT_PRESENT, `context entry of RID 0x${rid.toString(16)} is not present`);
  if (c.reserved.length > 0) return fault(FaultReason.SCT_3_CONTEXT_ENTRY_RESERVED, `context entry of RID 0x${rid.toString(16)} has reserved bits set`);
  const f = c.fields;
  return {
    ok: true,
    value: {
      rid,
      fpd: f.FPD === 1n,
      dte: f.DTE === 1n,
      paside: f.PASIDE === 1n,
      pre: f.PRE === 1n,
      pdts: Number(f.PDTS),
      dirPtr: f.PASIDDIRPTR << 12n,
      ridPasid: Number(f.RID_PASID),
      words: ctxWords,
    },
  };
}

/**
 * The PASID table entry of `pasid` under a context entry. `withPasid` says whether the request
 * carries a PASID (PASIDE must then be set); RID_PASID lookups pass false.
 * Faults: 0x45 PASIDE clear, 0x46 PASID beyond PDTS, 0x50/0x51/0x52 directory entry
 * access/P/reserved, 0x58 table entry access. The entry's own checks (0x59/0x5a/0x5b) are in
 * `check` of the result.
 */
export function readPasidEntry(ram: GuestRam, ctx: ContextInfo, pasid: number, withPasid: boolean): Walk<PasidEntryRead> {
  if (withPasid && !ctx.paside) return fault(FaultReason.SCT_6_PASIDE_CLEAR, `context entry of RID 0x${ctx.rid.toString(16)} has PASIDE clear`);
  if (pasid >= pasidLimitForPdts(ctx.pdts)) return fault(FaultReason.SCT_7_PASID_ABOVE_PDTS, `PASID ${pasid} is beyond PDTS ${ctx.pdts}`);
  const dir = readWords(ram, ctx.dirPtr + BigInt(pasidDirIndex(pasid) * 8), 1);
  if (dir === undefined) return fault(FaultReason.SPD_1_PASID_DIR_ENTRY_ACCESS, `PASID directory entry of PASID ${pasid} is outside guest RAM`);
  const de = decode(PASID_DIR_ENTRY, dir);
  if (de.fields.P === 0n) return fault(FaultReason.SPD_2_PASID_DIR_ENTRY_NOT_PRESENT, `PASID directory entry of PASID ${pasid} is not present`);
  if (de.reserved.length > 0) return fault(FaultReason.SPD_3_PASID_DIR_ENTRY_RESERVED, `PASID directory entry of PASID ${pasid} has reserved bits set`);
  return readTableEntry(ram, de.fields.SMPTBLPTR << 12n, pasid, de.fields.FPD === 1n);
}

/** The guest's own verdict on a request with PASID: the fault its walk ends in (null: none), and FPD. */
export interface PasidRequestVerdict {
  readonly reason: number | null;
  /** FPD of the context entry, the PASID directory entry or the PASID table entry on the path. */
  readonly fpd: boolean;
}

/**
 * Walk a request with `pasid` under a context entry as the IOMMU does (PASIDE, PDTS, directory
 * entry, table entry and its checks) and say where it faults. FPD is read from every entry the
 * walk reached, whether its P bit is set or not (VT-d spec §9.4, §9.5, §9.6: FPD is evaluated
 * irrespective of P; QEMU `vtd_ce_get_pasid_fpd` likewise).
 */
export function pasidRequestVerdict(ram: GuestRam, ctx: ContextInfo, pasid: number): PasidRequestVerdict {
  if (!ctx.paside) return { reason: FaultReason.SCT_6_PASIDE_CLEAR, fpd: ctx.fpd };
  if (pasid >= pasidLimitForPdts(ctx.pdts)) return { reason: FaultReason.SCT_7_PASID_ABOVE_PDTS, fpd: ctx.fpd };
  const dir = readWords(ram, ctx.dirPtr + BigInt(pasidDirIndex(pasid) * 8), 1);
  if (dir === undefined) return { reason: FaultReason.SPD_1_PASID_DIR_ENTRY_ACCESS, fpd: ctx.fpd };
  const de = decode(PASID_DIR_ENTRY, dir);
  const dirFpd = ctx.fpd || de.fields.FPD === 1n;
  if (de.fields.P === 0n) return { reason: FaultReason.SPD_2_PASID_DIR_ENTRY_NOT_PRESENT, fpd: dirFpd };
  if (de.reserved.length > 0) return { reason: FaultReason.SPD_3_PASID_DIR_ENTRY_RESERVED, fpd: dirFpd };
  const t = readTableEntry(ram, de.fields.SMPTBLPTR << 12n, pasid, dirFpd);
  if (!t.ok) return { reason: t.reason, fpd: dirFpd };
  const c = t.value.check;
  const fpd = dirFpd || c.fields.FPD === 1n;
  return { reason: c.ok ? null : c.fault, fpd };
}

function readTableEntry(ram: GuestRam, table: bigint, pasid: number, dirFpd: boolean): Walk<PasidEntryRead> {
  const gpa = table + BigInt(pasidTableIndex(pasid) * PASID_ENTRY_SIZE);
  const words = readWords(ram, gpa, PASID_ENTRY_WORDS);
  if (words === undefined) return fault(FaultReason.SPT_1_PASID_ENTRY_ACCESS, `PASID table entry of PASID ${pasid} is outside guest RAM`);
  return { ok: true, value: { pasid, gpa, words, dirFpd, check: checkPasidEntry(words, PASID_ENTRY_CHECKS) } };
}

/**
 * Every PASID table entry with P set under a context entry, in PASID order (directory entries
 * that are absent, reserved or unreadable are skipped; so are entries with P clear).
 */
export function* presentPasidEntries(ram: GuestRam, ctx: ContextInfo): Generator<PasidEntryRead> {
  const n = pasidDirEntries(ctx.pdts);
  const dir = readWords(ram, ctx.dirPtr, n);
  if (dir === undefined) return;
  for (let i = 0; i < n; i++) {
    const de = decode(PASID_DIR_ENTRY, [dir[i]!]);
    if (de.fields.P === 0n || de.reserved.length > 0) continue;
    const table = de.fields.SMPTBLPTR << 12n;
    const all = readWords(ram, table, 64 * PASID_ENTRY_WORDS);
    if (all === undefined) continue;
    for (let j = 0; j < 64; j++) {
      if ((all[j * PASID_ENTRY_WORDS]! & 1n) === 0n) continue;
      const words = all.slice(j * PASID_ENTRY_WORDS, (j + 1) * PASID_ENTRY_WORDS);
      const pasid = i * 64 + j;
      yield { pasid, gpa: table + BigInt(j * PASID_ENTRY_SIZE), words, dirFpd: de.fields.FPD === 1n, check: checkPasidEntry(words, PASID_ENTRY_CHECKS) };
    }
  }
}
