/**
 * The host-side cost of the extra translation a non-identity (SPID) mapping needs, alone:
 * ioasid_find_by_spid on a VM's set holding 1024 IDs with SPIDs (what the VDCM does when a
 * guest programs a PASID into an ADI), beside a plain Map lookup of the same keys. The
 * end-to-end DMA latency in the experiment includes the guest↔host round trip; this figure
 * isolates the translation itself.
 */
import { IoasidCore } from '../../../../host/ioasid/index.js';

const IDS = 1024;
const LOOKUPS = 1_000_000;

export function translationMicro(): { findBySpidNs: number; mapGetNs: number } {
  const core = new IoasidCore({ pasidBits: 20 });
  const set = core.setAlloc({ quota: IDS });
  const spids: number[] = [];
  const map = new Map<number, number>();
  for (let i = 0; i < IDS; i++) {
    const id = core.alloc(set, 1, 2 ** 20 - 1);
    const spid = 0x100 + i * 7;
    core.attachSpid(set, id, spid);
    spids.push(spid);
    map.set(spid, id);
  }
  const time = (f: (spid: number) => number | null | undefined): number => {
    let sink = 0;
    for (let i = 0; i < 100_000; i++) sink += f(spids[i & (IDS - 1)]!) ?? 0;
    const runs: number[] = [];
    for (let r = 0; r < 5; r++) {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < LOOKUPS; i++) sink += f(spids[(i * 31) & (IDS - 1)]!) ?? 0;
      runs.push(Number(process.hrtime.bigint() - t0) / LOOKUPS);
    }
    if (sink === -1) throw new Error('unreachable');
    runs.sort((a, b) => a - b);
    return runs[2]!;
  };
  const findBySpidNs = time((s) => core.findBySpid(set, s));
  const mapGetNs = time((s) => map.get(s));
  return { findBySpidNs, mapGetNs };
}
