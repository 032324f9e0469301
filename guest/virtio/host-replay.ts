/**
 * The virtio-iommu device's domains and endpoints replayed on a fresh host (ViommuModel.replay;
 * docs/reliability.md §2), through the VM's host uAPI (guest/uapi/): every non-bypass domain
 * gets a new host domain and its mappings again (from the guest-visible mapping tree), and each
 * endpoint's RID goes back where it was (its new domain, domain 0, or detached). A re-added
 * device's RID starts on domain 0; where the uAPI replaces in place (iommufd) it is moved by
 * REPLACE, else detached first.
 */
import { isVsvaError } from '../../src/errors.js';
import { DmaMapFlag } from '../../vhost/messages/dma.js';
import type { ReplayReport } from '../viommu.js';
import type { HostUapi } from '../uapi/host-uapi.js';
import { MapFlag } from './iommu-spec.js';
import type { Domain, Endpoint } from './state.js';

export async function replayDomains(u: HostUapi, domains: Iterable<Domain>, endpoints: Iterable<Endpoint>, r: ReplayReport): Promise<void> {
  const newHost = new Map<number, number>([[0, 0]]);
  for (const d of domains) {
    if (d.bypass) continue;
    const old = d.hostId;
    try {
      d.hostId = await u.domainAlloc();
      newHost.set(old, d.hostId);
      r.domains++;
    } catch (e) {
      r.failures.push(`domain ${d.id}: ${isVsvaError(e) ? e.code : 'EIO'}`);
      continue;
    }
    for (const m of d.mappings) {
      const flags = (m.flags & MapFlag.READ ? DmaMapFlag.READ : 0) | (m.flags & MapFlag.WRITE ? DmaMapFlag.WRITE : 0);
      if (flags === 0) continue;
      try {
        await u.dmaMap(d.hostId, m.start, m.phys, m.end - m.start + 1n, flags);
        r.mappings++;
      } catch (e) {
        r.failures.push(`domain ${d.id} mapping 0x${m.start.toString(16)}: ${isVsvaError(e) ? e.code : 'EIO'}`);
      }
    }
  }
  for (const ep of endpoints) {
    const want = ep.host === null ? null : (newHost.get(ep.host) ?? null);
    try {
      if (want !== null && want !== 0 && u.replaces) await u.attachRid(ep.id, 0, want);
      else if (want !== 0) {
        await u.detachRid(ep.id, 0);
        if (want !== null) await u.attachRid(ep.id, null, want);
      }
      ep.host = want;
    } catch (e) {
      ep.host = 0;
      r.failures.push(`endpoint 0x${ep.id.toString(16)} attachment: ${isVsvaError(e) ? e.code : 'EIO'}`);
    }
  }
}
