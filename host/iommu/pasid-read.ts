/**
 * Reading a PASID entry the way the hardware does on a PASID-cache miss: PASID directory entry
 * at PASIDDIRPTR + (PASID[19:6] · 8), then the 64-byte entry at SMPTBLPTR + (PASID[5:0] · 64),
 * then the checks of src/vtd checkPasidEntry. Reference §2, fault codes 0x50–0x5b.
 */
import { FaultReason as FR } from '../../src/vtd/fault.js';
import {
  checkPasidEntry,
  PASID_DIR_ENTRY,
  PASID_DIR_ENTRY_SIZE,
  PASID_ENTRY_SIZE,
  PASID_ENTRY_WORDS,
  pasidDirIndex,
  pasidTableIndex,
} from '../../src/vtd/pasid-entry.js';
import { TWO_32 } from './constants.js';
import { CachedPasidEntry } from './pasid-cache.js';
import type { PhysPort } from './phys-port.js';

const DIR_P = Number(PASID_DIR_ENTRY.field.P.mask);
const DIR_FPD = Number(PASID_DIR_ENTRY.field.FPD.mask);
const DIR_RSV = Number(PASID_DIR_ENTRY.reserved[0]!);
const DIR_PTR_LO = Number(PASID_DIR_ENTRY.field.SMPTBLPTR.mask & 0xffffffffn);

export class PasidEntryReader {
  /** FPD that applies to the last failed read (directory FPD, or the entry's FPD bit). */
  fpd = false;
  private readonly words: bigint[] = new Array<bigint>(PASID_ENTRY_WORDS).fill(0n);

  constructor(
    private readonly port: PhysPort,
    private readonly haw: number,
    /** CAP.SAGAW field value of the host IOMMU. */
    private readonly sagaw: number,
  ) {}

  /** The decoded entry, or a fault reason (with `fpd` set). */
  read(dirPtr: number, pasid: number): CachedPasidEntry | number {
    this.fpd = false;
    const port = this.port;
    if (!port.load(dirPtr + pasidDirIndex(pasid) * PASID_DIR_ENTRY_SIZE)) return FR.SPD_1_PASID_DIR_ENTRY_ACCESS;
    const dlo = port.lo;
    const dhi = port.hi;
    const dirFpd = (dlo & DIR_FPD) !== 0;
    this.fpd = dirFpd;
    if ((dlo & DIR_P) === 0) return FR.SPD_2_PASID_DIR_ENTRY_NOT_PRESENT;
    if ((dlo & DIR_RSV) !== 0) return FR.SPD_3_PASID_DIR_ENTRY_RESERVED;
    if (dhi >= 2 ** 21) return FR.SPT_1_PASID_ENTRY_ACCESS;
    const table = dhi * TWO_32 + ((dlo & DIR_PTR_LO) >>> 0);
    const at = table + pasidTableIndex(pasid) * PASID_ENTRY_SIZE;
    for (let i = 0; i < PASID_ENTRY_WORDS; i++) {
      if (!port.load(at + i * 8)) return FR.SPT_1_PASID_ENTRY_ACCESS;
      this.words[i] = (BigInt(port.hi) << 32n) | BigInt(port.lo);
    }
    const r = checkPasidEntry(this.words, { sagaw: this.sagaw, fl5lp: true });
    if (!r.ok) {
      this.fpd = dirFpd || r.fields.FPD === 1n;
      return r.fault;
    }
    return new CachedPasidEntry(r.fields, dirFpd, this.haw);
  }
}
