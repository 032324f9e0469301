/**
 * GET_STATE's JSON text (docs/protocol.md §10.9): the whole snapshot, its pages, and the view of
 * one VM, built from each VM's cached PASID-table and KVM-table text (pasid-rows.ts) instead of
 * serialising every row again. HostServer decides who sees which (host-server.ts stateJson).
 */
import { fail } from '../../src/errors.js';
import { GET_STATE_MAX_PAGE_VMS } from '../../vhost/messages/vm.js';
import { MAX_REPLY_PAYLOAD } from '../../vhost/wire/header.js';
import type { IoasidCore } from '../ioasid/index.js';
import type { HostIommu } from '../iommu/host-iommu.js';
import type { KvmEntry } from '../kvm/kvm.js';
import type { Vm } from './vm.js';

/**
 * A GET_STATE page stops taking VMs once it holds this much JSON (it always holds one): pages
 * stay far below the 64 MiB reply limit (MAX_REPLY_PAYLOAD, docs/protocol.md §7) and cheap to
 * build, whatever the VMs hold.
 */
export const GET_STATE_PAGE_BYTES = 4 * 1024 * 1024;

/**
 * E2BIG when a GET_STATE document does not fit the reply limit (MAX_REPLY_PAYLOAD, docs/protocol.md
 * §7): the reply body is 8 bytes of length + reserved, then the JSON (vhost/messages/vm.ts).
 */
export function checkStateReplySize(json: string): void {
  if (json.length > (MAX_REPLY_PAYLOAD - 8) / 3 && Buffer.byteLength(json, 'utf8') > MAX_REPLY_PAYLOAD - 8) {
    fail('E2BIG', `GET_STATE: ${Buffer.byteLength(json, 'utf8')} bytes of state exceed the ${MAX_REPLY_PAYLOAD}-byte reply limit`);
  }
}

/** JSON text of KVM's table: what JSON.stringify gives, written directly (numbers only). */
function kvmJson(entries: readonly KvmEntry[]): string {
  const parts = new Array<string>(entries.length);
  for (let i = 0; i < entries.length; i++) parts[i] = `{"gpasid":${entries[i]!.gpasid},"hpasid":${entries[i]!.hpasid}}`;
  return `[${parts.join(',')}]`;
}

/** The IOMMU figures of the snapshot: IOTLB hits and misses, walks, faults. */
export function iommuTotals(iommu: HostIommu): { iotlbHits: number; iotlbMisses: number; walks: number; faults: number } {
  const s = iommu.stats();
  return { iotlbHits: s.hits, iotlbMisses: s.misses, walks: s.walks, faults: s.faults };
}

/** What the text is built from (the host service's registry). */
export interface StateSource {
  readonly core: IoasidCore;
  readonly iommu: HostIommu;
  /** The VMs, in id order. */
  vmsById(): Vm[];
  /** The id the next VM will get (VM ids are never reused). */
  nextVmId(): number;
}

export class StateJson {
  constructor(private readonly src: StateSource) {}

  /**
   * JSON text of HostServer.snapshot(): same fields and values; in each VM object the `pasids`
   * and `kvm` keys come last. O(everything): large hosts are read page by page.
   */
  snapshotJson(): string {
    const parts = [`${this.headJson().slice(0, -1)},"vms":[`];
    this.src.vmsById().forEach((vm, i) => this.pushVmJson(parts, vm, i > 0));
    parts.push(`],"iommu":${JSON.stringify(iommuTotals(this.src.iommu))}}`);
    return parts.join('');
  }

  /**
   * One page of the whole-host snapshot: the host fields, `vmCount` (VMs now), the VMs with
   * id ≥ `cursor` in id order — at most `maxVms`, and no more once the page holds
   * GET_STATE_PAGE_BYTES of JSON (at least one VM) — and `next`, the cursor of the following
   * page (null after the last VM). A page costs only its VMs (plus their changed PASID rows).
   * VMs are never renumbered, so a VM that comes or goes between pages shifts nothing: each VM
   * present throughout is in exactly one page.
   * EINVAL: maxVms outside 1–GET_STATE_MAX_PAGE_VMS, or a cursor past every VM id issued.
   */
  snapshotPageJson(cursor: number, maxVms: number): string {
    const nextId = this.src.nextVmId();
    if (!Number.isInteger(maxVms) || maxVms < 1 || maxVms > GET_STATE_MAX_PAGE_VMS) fail('EINVAL', `GET_STATE: max_vms ${maxVms} is not 1–${GET_STATE_MAX_PAGE_VMS}`);
    if (!Number.isInteger(cursor) || cursor < 0 || cursor > nextId) fail('EINVAL', `GET_STATE: cursor ${cursor} is past every VM id issued (next id ${nextId})`);
    const all = this.src.vmsById();
    let i = 0;
    while (i < all.length && all[i]!.id < cursor) i++;
    const parts = ['']; // the head, once `next` is known
    let count = 0;
    let bytes = 0;
    while (i < all.length && count < maxVms && (count === 0 || bytes < GET_STATE_PAGE_BYTES)) {
      bytes += this.pushVmJson(parts, all[i]!, count > 0);
      count++;
      i++;
    }
    const next = i < all.length ? all[i]!.id : null;
    parts[0] = `${this.headJson().slice(0, -1)},"vmCount":${all.length},"next":${next},"vms":[`;
    parts.push(`],"iommu":${JSON.stringify(iommuTotals(this.src.iommu))}}`);
    return parts.join('');
  }

  /** A VM's own view: the host head, its VM, no host-wide IOMMU counters. */
  ownVmJson(vm: Vm): string {
    const parts = [`${this.headJson().slice(0, -1)},"vms":[`];
    this.pushVmJson(parts, vm, false);
    parts.push(']}');
    return parts.join('');
  }

  /** A page of a VM's own view: its VM when `cursor` ≤ its id, empty at its id + 1; EINVAL beyond. */
  ownVmPageJson(vm: Vm, cursor: number): string {
    if (!Number.isInteger(cursor) || cursor < 0 || cursor > vm.id + 1) fail('EINVAL', `GET_STATE: cursor ${cursor} is past this connection's VM`);
    const parts = [`${this.headJson().slice(0, -1)},"vmCount":1,"next":null,"vms":[`];
    if (cursor <= vm.id) this.pushVmJson(parts, vm, false);
    parts.push(']}');
    return parts.join('');
  }

  private headJson(): string {
    const cap = this.src.core.capacity;
    return JSON.stringify({ pasidBits: this.src.core.pasidBits, capacity: { total: cap.total, available: cap.available } });
  }

  /**
   * Append the pieces of one VM of the snapshot as JSON text (after a comma when `comma`) to
   * `parts`, its PASID and KVM tables from their cached text. The caller joins the parts once:
   * the document is one flat string, each cached table copied into it once (pasid-rows.ts).
   * Returns the length of the VM's text (the comma not counted).
   */
  private pushVmJson(parts: string[], vm: Vm, comma: boolean): number {
    const { pasids, kvm, ...rest } = vm.snapshot({ rows: false });
    void pasids;
    void kvm;
    const head = JSON.stringify(rest);
    const rows = vm.pasidRows;
    const table = rows.json();
    const kvmText = rows.derivedJson('kvm', () => vm.kvm.entries(), kvmJson);
    parts.push(comma ? ',' : '', head.slice(0, -1), ',"pasids":', table, ',"kvm":', kvmText, '}');
    return head.length - 1 + ',"pasids":'.length + table.length + ',"kvm":'.length + kvmText.length + 1;
  }
}
