/**
 * Snapshot expectations: compare what an `expect` step asks against the host's snapshot
 * (`HostSnapshot` in src/api/types.ts, the GET_STATE reply of docs/protocol.md) and what the
 * guest drivers observed (faults recorded, page requests serviced). Pure functions: each returns
 * the first mismatch (what, expected, actual) or undefined, and `save:` stores fields of matched
 * rows into the variables.
 */
import type { HostSnapshot, PasidSnapshot, VmSnapshot } from '../../api/types.js';
import { hex, type Mismatch } from './show.js';
import type { ExpectedFault, IntValue, Matcher, SourceLocation } from './types.js';
import { resolveAddr, resolveInt, type Vars } from './vars.js';

/**
 * Expectation about one row of a VM's PASID table. The row is selected by the `gpasid` and/or
 * `hpasid` given as plain values (at least one); a `{ not: x }` there is a check, not a selector.
 */
export interface PasidRowExpectation {
  gpasid?: Matcher<IntValue | null>;
  hpasid?: Matcher<IntValue>;
  /** The row must not exist. */
  absent: boolean;
  state?: Matcher<string>;
  refs?: Matcher<number>;
  /** Exactly these users, in any order. */
  users?: string[];
  /** Number of bindings, or the devices bound. */
  bindings?: number | { bdf: string; pgtt?: 'nested' | 'sl' | 'pt' }[];
  /** Store fields of the matched row in variables: { hpasid: NAME }. */
  save?: { hpasid?: string; gpasid?: string };
  loc: SourceLocation;
}

export interface VmExpectation {
  vm: string;
  connected?: boolean;
  used?: number;
  quota?: number;
  /** Number of PASID rows. */
  pasids?: number;
  rows: PasidRowExpectation[];
  /** The most recent fault the guest driver recorded (fault registers / eventq). */
  fault?: ExpectedFault & { pasid?: IntValue };
  /** No fault recorded since the start. */
  noFaults?: boolean;
  /** Page requests the guest driver has serviced so far. */
  pageRequests?: number;
}

/** What an `expect` step checks in the host's snapshot. */
export interface SnapshotExpectation {
  capacity?: { total?: number; available?: number };
  /** Number of VMs on the host. */
  vms?: number;
  vmChecks: VmExpectation[];
}

/** What a VM's guest driver observed, for `fault`, `noFaults` and `pageRequests`. */
export interface GuestObservations {
  faults: readonly { reason: number; addr: bigint; pasid?: number }[];
  pageRequests: number;
}

const mm = (what: string, expected: unknown, actual: unknown): Mismatch => ({ what, expected: show(expected), actual: show(actual) });

function show(v: unknown): string {
  if (typeof v === 'bigint') return hex(v);
  if (typeof v === 'string') return v;
  if (v === undefined) return 'nothing';
  return JSON.stringify(v, (_k, x: unknown) => (typeof x === 'bigint' ? hex(x) : x));
}

function matcherHolds<T>(m: Matcher<T>, actual: T): boolean {
  return 'eq' in m ? m.eq === actual : m.not !== actual;
}

function showMatcher<T>(m: Matcher<T>): string {
  return 'eq' in m ? show(m.eq) : `anything but ${show(m.not)}`;
}

/** Check everything an expect step asks (except memory, which the runner reads). */
export function checkSnapshotExpectations(step: SnapshotExpectation, snap: HostSnapshot, observe: (vm: string) => GuestObservations, vars: Vars): Mismatch | undefined {
  if (step.capacity?.total !== undefined && snap.capacity.total !== step.capacity.total) return mm('host PASID capacity (total)', step.capacity.total, snap.capacity.total);
  if (step.capacity?.available !== undefined && snap.capacity.available !== step.capacity.available) return mm('host PASID capacity (available)', step.capacity.available, snap.capacity.available);
  if (step.vms !== undefined && snap.vms.length !== step.vms) return mm('number of VMs on the host', step.vms, snap.vms.length);
  for (const e of step.vmChecks) {
    const vm = snap.vms.find((v) => v.name === e.vm);
    if (!vm) return mm(`VM ${e.vm}`, 'present on the host', `absent (VMs: ${snap.vms.map((v) => v.name).join(', ') || 'none'})`);
    const bad = checkVm(e, vm, observe(e.vm), vars);
    if (bad) return bad;
  }
  return undefined;
}

function checkVm(e: VmExpectation, vm: VmSnapshot, obs: GuestObservations, vars: Vars): Mismatch | undefined {
  const p = `VM ${e.vm}`;
  if (e.connected !== undefined && vm.connected !== e.connected) return mm(`${p} connected`, e.connected, vm.connected);
  if (e.used !== undefined && vm.set.used !== e.used) return mm(`${p} IOASID set: PASIDs used`, e.used, vm.set.used);
  if (e.quota !== undefined && vm.set.quota !== e.quota) return mm(`${p} IOASID set: quota`, e.quota, vm.set.quota);
  if (e.pasids !== undefined && vm.pasids.length !== e.pasids) return mm(`${p} PASID table: rows`, e.pasids, `${vm.pasids.length} ${rowList(vm.pasids)}`);
  for (const row of e.rows) {
    const bad = checkRow(row, vm, vars);
    if (bad) return bad;
  }
  if (e.pageRequests !== undefined && obs.pageRequests !== e.pageRequests) return mm(`${p} page requests serviced by the guest driver`, e.pageRequests, obs.pageRequests);
  if (e.noFaults && obs.faults.length > 0) {
    const f = obs.faults[obs.faults.length - 1]!;
    return mm(`${p} faults recorded by the guest driver`, 'none', `${obs.faults.length}, the last reason ${hex(f.reason)} at ${hex(f.addr)}`);
  }
  if (e.fault) {
    const f = obs.faults[obs.faults.length - 1];
    if (!f) return mm(`${p} last fault recorded by the guest driver`, 'a fault', 'no fault recorded');
    if (e.fault.reason !== undefined && f.reason !== resolveInt(e.fault.reason, vars)) return mm(`${p} last fault: reason`, hex(resolveInt(e.fault.reason, vars)), hex(f.reason));
    if (e.fault.addr !== undefined && f.addr !== resolveAddr(e.fault.addr, vars)) return mm(`${p} last fault: address`, resolveAddr(e.fault.addr, vars), f.addr);
    if (e.fault.pasid !== undefined && f.pasid !== resolveInt(e.fault.pasid, vars)) return mm(`${p} last fault: PASID`, resolveInt(e.fault.pasid, vars), f.pasid ?? 'none');
  }
  return undefined;
}

function rowList(rows: readonly PasidSnapshot[]): string {
  const shown = rows.slice(0, 8).map((r) => `${r.gpasid ?? '-'}→${r.hpasid}`);
  return `(gpasid→hpasid: ${shown.join(', ')}${rows.length > 8 ? ', …' : ''})`.replace('(gpasid→hpasid: )', '(none)');
}

function checkRow(e: PasidRowExpectation, vm: VmSnapshot, vars: Vars): Mismatch | undefined {
  const g = e.gpasid && 'eq' in e.gpasid ? (e.gpasid.eq === null ? null : resolveInt(e.gpasid.eq, vars)) : undefined;
  const h = e.hpasid && 'eq' in e.hpasid ? resolveInt(e.hpasid.eq, vars) : undefined;
  const sel = [g !== undefined ? `gpasid ${g ?? 'none'}` : '', h !== undefined ? `hpasid ${h}` : ''].filter(Boolean).join(', ');
  const p = `VM ${vm.name} PASID row (${sel})`;
  const rows = vm.pasids.filter((r) => (g === undefined || r.gpasid === g) && (h === undefined || r.hpasid === h));
  if (e.absent) return rows.length === 0 ? undefined : mm(p, 'no such row', `present: ${show(rows[0])}`);
  if (rows.length === 0) return mm(p, 'a row', `no such row; rows are ${rowList(vm.pasids)}`);
  if (rows.length > 1) return mm(p, 'exactly one row', `${rows.length} rows ${rowList(rows)}`);
  const r = rows[0]!;
  if (e.gpasid && 'not' in e.gpasid) {
    const not = e.gpasid.not === null ? null : resolveInt(e.gpasid.not, vars);
    if (r.gpasid === not) return mm(`${p}: gpasid`, `anything but ${show(not)}`, r.gpasid);
  }
  if (e.hpasid && 'not' in e.hpasid) {
    const not = resolveInt(e.hpasid.not, vars);
    if (r.hpasid === not) return mm(`${p}: hpasid`, `anything but ${not}`, r.hpasid);
  }
  if (e.state && !matcherHolds(e.state, r.state)) return mm(`${p}: state`, showMatcher(e.state), r.state);
  if (e.refs && !matcherHolds(e.refs, r.refs)) return mm(`${p}: refs`, showMatcher(e.refs), r.refs);
  if (e.users) {
    const want = [...e.users].sort();
    const got = [...r.users].sort();
    if (want.join(',') !== got.join(',')) return mm(`${p}: users`, want, got);
  }
  if (typeof e.bindings === 'number') {
    if (r.bindings.length !== e.bindings) return mm(`${p}: bindings`, e.bindings, `${r.bindings.length} ${show(r.bindings)}`);
  } else if (e.bindings) {
    const want = [...e.bindings].sort((a, b) => a.bdf.localeCompare(b.bdf));
    const got = [...r.bindings].sort((a, b) => a.bdf.localeCompare(b.bdf));
    const same = want.length === got.length && want.every((w, i) => w.bdf === got[i]!.bdf && (w.pgtt === undefined || w.pgtt === got[i]!.pgtt));
    if (!same) return mm(`${p}: bindings`, want, got.map((b) => ({ bdf: b.bdf, pgtt: b.pgtt })));
  }
  if (e.save?.hpasid) vars.set(e.save.hpasid, r.hpasid);
  if (e.save?.gpasid) {
    if (r.gpasid === null) return mm(`${p}: gpasid to save in $${e.save.gpasid}`, 'a guest PASID', 'none');
    vars.set(e.save.gpasid, r.gpasid);
  }
  return undefined;
}
