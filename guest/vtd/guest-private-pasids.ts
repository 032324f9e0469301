/**
 * Guest-private PASIDs on VT-d (docs/design.md §3.1 with `vcmd: false`; the "guest-private, SPID" scheme
 * of docs/performance.md): without the virtual command interface the guest picks its own PASIDs,
 * so they are not host PASIDs. The model then acts as a VMM with a non-identity mapping
 * (QEMU's vSVA series with `hpasid != gpasid`): for each guest PASID it forwards it allocates a
 * host PASID (PASID_ALLOC, charged to the VM's quota), binds with both (BIND_GPASID hpasid +
 * gpasid with GPASID_VAL — the host records the guest PASID as the ID's SPID, which the VDCM's
 * find_by_spid and KVM use), and frees the host PASID after the guest PASID's last binding is
 * gone.
 *
 * One host PASID per guest PASID per VM, shared by every device the guest binds that PASID on,
 * counted by the bindings that use it. Everything the host reports about a pf device carries the
 * host PASID (the pf is programmed with it) and is translated back with `guestOf`.
 */
import { fail, isVsvaError } from '../../src/errors.js';
import { PASID_MAX } from '../../src/vtd/pasid-entry.js';
import type { HostCalls } from '../viommu.js';

/** Host PASIDs are asked for in [1, PASID_MAX] (PASID 0 is RID_PASID, as for VCMD). */
const RANGE = { min: 1, max: PASID_MAX } as const;

interface Mapping {
  hpasid: number;
  /** Bindings (and transitions in progress) that use the host PASID. */
  users: number;
}

export class GuestPrivatePasids {
  private readonly byGuest = new Map<number, Mapping>();
  private readonly byHost = new Map<number, number>();
  /** Bumped by every change (for callers that memoise lookups). */
  version = 0;
  readonly counters = { allocs: 0, frees: 0, refused: 0 };

  constructor(
    private readonly host: HostCalls,
    /** Called before any host request, so batched invalidations reach the host first. */
    private readonly beforeHostRequest: () => Promise<void>,
  ) {}

  /** The host PASID of a guest PASID, or undefined when none is allocated. */
  hostOf(gpasid: number): number | undefined {
    return this.byGuest.get(gpasid)?.hpasid;
  }

  /** The guest PASID a host PASID of this VM stands for, or undefined. */
  guestOf(hpasid: number): number | undefined {
    return this.byHost.get(hpasid);
  }

  /** Host PASIDs held. */
  hostPasids(): number[] {
    return [...this.byHost.keys()];
  }

  /** Pairs (guest, host), for inspection and replay. */
  mappings(): { gpasid: number; hpasid: number; users: number }[] {
    return [...this.byGuest].map(([gpasid, m]) => ({ gpasid, hpasid: m.hpasid, users: m.users }));
  }

  /**
   * One more user of `gpasid`'s host PASID, allocating it on the host at the first. Throws the
   * host's error (ENOSPC when the VM's quota is exhausted); nothing changes then.
   */
  async acquire(gpasid: number): Promise<number> {
    const m = this.byGuest.get(gpasid);
    if (m !== undefined) {
      m.users++;
      return m.hpasid;
    }
    await this.beforeHostRequest();
    let hpasid: number;
    try {
      hpasid = (await this.host.call('PASID_ALLOC', RANGE)).pasid;
    } catch (e) {
      this.counters.refused++;
      throw e;
    }
    // Another acquire of the same guest PASID may have finished meanwhile: keep one.
    const raced = this.byGuest.get(gpasid);
    if (raced !== undefined) {
      raced.users++;
      await this.freeOnHost(hpasid);
      return raced.hpasid;
    }
    this.byGuest.set(gpasid, { hpasid, users: 1 });
    this.byHost.set(hpasid, gpasid);
    this.counters.allocs++;
    this.version++;
    return hpasid;
  }

  /** One more user of an existing mapping (holds it across an unbind + bind). No-op when absent. */
  hold(gpasid: number): boolean {
    const m = this.byGuest.get(gpasid);
    if (m === undefined) return false;
    m.users++;
    return true;
  }

  /** One user fewer; the last frees the host PASID (errors are the caller's to log). */
  async release(gpasid: number): Promise<void> {
    const m = this.byGuest.get(gpasid);
    if (m === undefined) return;
    if (--m.users > 0) return;
    this.forget(m.hpasid);
    await this.freeOnHost(m.hpasid);
  }

  /** Drop a mapping without telling the host (the host freed the PASID itself). */
  forget(hpasid: number): number | undefined {
    const g = this.byHost.get(hpasid);
    if (g === undefined) return undefined;
    this.byHost.delete(hpasid);
    this.byGuest.delete(g);
    this.version++;
    return g;
  }

  /**
   * Replay on a fresh host (docs/reliability.md §2): allocate a host PASID again for every guest
   * PASID in use — any free one does, the guest never sees host PASIDs. Returns the guest PASIDs
   * the host could not give one for (their mappings are dropped).
   */
  async replay(host: HostCalls): Promise<{ allocated: number; lost: number[] }> {
    const out = { allocated: 0, lost: [] as number[] };
    const old = [...this.byGuest];
    this.byGuest.clear();
    this.byHost.clear();
    this.version++;
    for (const [gpasid, m] of old) {
      try {
        const hpasid = (await host.call('PASID_ALLOC', RANGE)).pasid;
        this.byGuest.set(gpasid, { hpasid, users: m.users });
        this.byHost.set(hpasid, gpasid);
        out.allocated++;
      } catch {
        out.lost.push(gpasid);
      }
    }
    return out;
  }

  private async freeOnHost(hpasid: number): Promise<void> {
    await this.beforeHostRequest();
    try {
      const r = await this.host.call('PASID_FREE', { min: hpasid, max: hpasid });
      if (r.freed !== 1) fail('EIO', `PASID_FREE of host PASID ${hpasid} freed ${r.freed}`);
      this.counters.frees++;
    } catch (e) {
      // The host freed it already (a forced free): nothing is left to give back.
      if (!isVsvaError(e, 'ENOENT')) throw e;
    }
  }
}
