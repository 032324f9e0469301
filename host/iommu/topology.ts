/**
 * The topology view of the /dev/iommu proposal (Kevin Tian, vfio "remove the unused mdev iommu
 * hook" thread, 2021): every domain with the RID / RID+PASID routes attached to it
 * (nested bindings listed under their nesting parent), and every device with its routes.
 * `formatTopology` prints it as that proposal's per-RID tree.
 */
import { PGTT_FL, PGTT_NESTED, PGTT_PT } from './constants.js';
import type { IommuDevice } from './device.js';
import type { Attachment, DomainType, IommuDomain, PgttName } from './domain.js';

export interface RouteView {
  rid: number;
  bdf: string;
  /** null: the RID itself (requests without PASID). */
  pasid: number | null;
  did: number;
  pgtt: PgttName;
  /** Nested bindings: the parent domain (= did) whose second level the first level is nested on. */
  nestingParent?: number;
  /** Nested bindings: the bound first-level table (GPA), hex. */
  flptr?: string;
  flLevels?: 4 | 5;
}

export interface DomainView {
  did: number;
  type: DomainType;
  name: string;
  /** Second-level levels ('paging'). */
  levels?: number;
  mappedBytes?: number;
  tablePages?: number;
  routes: RouteView[];
}

export interface DeviceView {
  rid: number;
  bdf: string;
  name: string;
  pasidBits: number;
  ats: boolean;
  pri: boolean;
  /** DID of the default domain (requests without PASID), or null. */
  defaultDomain: number | null;
  routes: RouteView[];
}

export interface IommuTopology {
  domains: DomainView[];
  devices: DeviceView[];
}

export function pgttName(pgtt: number): PgttName {
  return pgtt === PGTT_FL ? 'first-level' : pgtt === PGTT_NESTED ? 'nested' : pgtt === PGTT_PT ? 'pass-through' : 'second-level';
}

function routeView(a: Attachment, bdfOf: (rid: number) => string): RouteView {
  const r: RouteView = { rid: a.rid, bdf: bdfOf(a.rid), pasid: a.pasid, did: a.domain.did, pgtt: pgttName(a.pgtt) };
  if (a.nested !== undefined) {
    r.nestingParent = a.domain.did;
    r.flptr = '0x' + a.nested.flptr.toString(16);
    r.flLevels = a.nested.levels;
  }
  return r;
}

function byRoute(a: RouteView, b: RouteView): number {
  return a.rid - b.rid || (a.pasid ?? -1) - (b.pasid ?? -1);
}

export function buildTopology(domains: IommuDomain[], devices: IommuDevice[]): IommuTopology {
  const bdfs = new Map(devices.map((d) => [d.rid, d.bdf]));
  const bdfOf = (rid: number): string => bdfs.get(rid) ?? `rid-${rid}`;
  return {
    domains: domains
      .filter((d) => d.type !== 'identity' || d.attachments.size > 0)
      .sort((a, b) => a.did - b.did)
      .map((d) => {
        const v: DomainView = { did: d.did, type: d.type, name: d.name, routes: [...d.attachments.values()].map((a) => routeView(a, bdfOf)).sort(byRoute) };
        if (d.table !== null) {
          v.levels = d.table.levels;
          v.mappedBytes = d.table.mappedBytes;
          v.tablePages = d.table.tablePages;
        }
        return v;
      }),
    devices: devices
      .sort((a, b) => a.rid - b.rid)
      .map((dev) => {
        const routes: RouteView[] = [];
        if (dev.defaultAttachment !== null) routes.push(routeView(dev.defaultAttachment, bdfOf));
        for (const a of dev.pasidAttachments.values()) routes.push(routeView(a, bdfOf));
        return {
          rid: dev.rid,
          bdf: dev.bdf,
          name: dev.name,
          pasidBits: dev.pasidBits,
          ats: dev.ats,
          pri: dev.pri,
          defaultDomain: dev.defaultAttachment?.domain.did ?? null,
          routes: routes.sort(byRoute),
        };
      }),
  };
}

/**
 * The proposal's tree: per device, the domains it reaches and, under each, the routes of that
 * domain (every RID's, as the proposal lists [RID2] under domain3 next to [RID1, PASID-y]).
 */
export function formatTopology(t: IommuTopology, names: (rid: number) => string = (rid) => t.devices.find((d) => d.rid === rid)?.name ?? `${rid}`): string {
  const lines: string[] = [];
  const domains = new Map(t.domains.map((d) => [d.did, d]));
  for (const dev of t.devices) {
    const dids = [...new Set(dev.routes.map((r) => r.did))];
    lines.push(`${names(dev.rid)}`);
    for (const did of dids) {
      const d = domains.get(did)!;
      const isDefault = dev.defaultDomain === did;
      lines.push(`  |-- domain${did} (${d.name}${isDefault ? ', default' : ''}, ${d.type})`);
      for (const r of d.routes) {
        const who = r.pasid === null ? `[${names(r.rid)}]` : `[${names(r.rid)}, PASID ${r.pasid}]`;
        const nested = r.pgtt === 'nested' ? ` nested, flptr ${r.flptr}` : '';
        lines.push(`  |      |-- ${who}${nested}`);
      }
    }
  }
  return lines.join('\n');
}
