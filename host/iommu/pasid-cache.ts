/**
 * A PASID-cache entry: a scalable-mode PASID table entry decoded once into numbers for the walk.
 * Only valid entries are cached (a not-present or invalid entry faults and is re-read next time).
 * The entry stays as decoded until a PASID-cache invalidation covers it, even if the entry in
 * memory changes (VT-d spec §6.5.2, PASID-cache invalidate descriptor 0x7).
 */
import { addressWidthForLevels, flLevelsFromFlpm, slLevelsFromAw } from '../../src/vtd/page-table.js';
import type { PasidEntryFields } from '../../src/vtd/pasid-entry.js';
import { PGTT_FL, PGTT_NESTED } from './constants.js';

/**
 * Memo of engine.firstLevelAllow, shared by every cached entry: indexed by an entry's `allowKey`
 * plus the walk's 7 permission inputs; −1 = not computed yet. The function depends on nothing
 * else, so one table of 32 · 128 answers serves all entries (a table per entry cost 0.7 KiB each).
 */
export const FL_ALLOW_MEMO = new Int32Array(32 * 128).fill(-1);

export class CachedPasidEntry {
  readonly pgtt: number;
  readonly did: number;
  /** FPD of the PASID entry or of its directory entry. */
  readonly fpd: boolean;
  /** HPA of the SL root, or −1 when SLPTPTR is beyond the host address width (fault 0x7b). */
  readonly slRoot: number;
  /** Page number of the SL root (slRoot / 4096), or −1 with slRoot. */
  readonly slRootPfn: number;
  readonly slLevels: number;
  /** SL input width in bits (39 / 48 / 57). */
  readonly slWidth: number;
  /** 2^slWidth, the first address beyond the second level. */
  readonly slLimit: number;
  /** slLimit / 4096: the first page number beyond the second level. */
  readonly slLimitPages: number;
  readonly slee: boolean;
  readonly slade: boolean;
  /** FLPTR: a GPA in nested mode, an HPA for first-level only; −1 when not representable. */
  readonly flRoot: number;
  /** Page number of FLPTR (flRoot / 4096), or −1 with flRoot. */
  readonly flRootPfn: number;
  readonly flLevels: number;
  readonly sre: boolean;
  readonly ere: boolean;
  readonly wpe: boolean;
  readonly nxe: boolean;
  readonly smep: boolean;
  readonly eafe: boolean;
  readonly pwsnp: boolean;
  /** The entry uses the first level (PGTT 1 or 3). */
  readonly firstLevel: boolean;
  /**
   * Offset of this entry's part of FL_ALLOW_MEMO: the PASID-entry bits engine.firstLevelAllow
   * reads (SRE, WPE, ERE, SMEP, SLEE) · 128.
   */
  readonly allowKey: number;

  constructor(f: PasidEntryFields, dirFpd: boolean, haw: number) {
    this.pgtt = Number(f.PGTT);
    this.did = Number(f.DID);
    this.fpd = dirFpd || f.FPD === 1n;
    const sl = f.SLPTPTR << 12n;
    this.slRoot = sl < 1n << BigInt(haw) ? Number(sl) : -1;
    // From the bigint field, so a page number in the small-integer range stays one (the walk's
    // page arithmetic then runs on integers).
    this.slRootPfn = this.slRoot < 0 ? -1 : Number(f.SLPTPTR);
    this.slLevels = slLevelsFromAw(Number(f.AW));
    this.slWidth = addressWidthForLevels(this.slLevels);
    this.slLimit = 2 ** this.slWidth;
    this.slLimitPages = 2 ** (this.slWidth - 12);
    this.slee = f.SLEE === 1n;
    this.slade = f.SLADE === 1n;
    const fl = f.FLPTR << 12n;
    this.flRoot = fl <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(fl) : -1;
    this.flRootPfn = this.flRoot < 0 ? -1 : Number(f.FLPTR);
    this.flLevels = flLevelsFromFlpm(Number(f.FLPM));
    this.sre = f.SRE === 1n;
    this.ere = f.ERE === 1n;
    this.wpe = f.WPE === 1n;
    this.nxe = f.NXE === 1n;
    this.smep = f.SMEP === 1n;
    this.eafe = f.EAFE === 1n;
    this.pwsnp = f.PWSNP === 1n;
    this.firstLevel = this.pgtt === PGTT_FL || this.pgtt === PGTT_NESTED;
    this.allowKey = ((this.sre ? 1 : 0) | (this.wpe ? 2 : 0) | (this.ere ? 4 : 0) | (this.smep ? 8 : 0) | (this.slee ? 16 : 0)) * 128;
  }
}
