/**
 * Scenario files → validated `Scenario` (schema.ts), or the list of everything wrong with them,
 * each issue at its file:line:col and path (e.g. `steps[3].bind.device`).
 *
 * YAML and JSON both go through the `yaml` package (JSON is a subset of YAML 1.2), which keeps
 * source ranges for every node, so an issue points at the offending value, not just the file.
 * Integers are parsed as bigint so that 64-bit addresses keep every bit.
 *
 * Checks are static and complete: unknown keys, missing keys, types and ranges, names of VMs,
 * processes and devices that must exist (at that point of the step list), `$VAR` references
 * that must have been defined by an earlier step, and actions that the VM's vIOMMU kind does not
 * have (e.g. a PASID-cache flush on a virtio-iommu VM). The parser collects every issue rather
 * than stopping at the first.
 */
import { readFileSync } from 'node:fs';
import { isMap, isSeq, LineCounter, parseDocument, type Document } from 'yaml';
import type { DeviceKind } from '../../api/types.js';
import {
  PAGE_REQUEST_POLICIES,
  STEP_OPS,
  VIRTIO_STATUS_NAMES,
  type AddrValue,
  type BytesSpec,
  type DmaOp,
  type DmaStep,
  type ExpectStep,
  type ExpectedError,
  type ExpectedFault,
  type IntValue,
  type Matcher,
  type MemoryRef,
  type PageSize,
  type PasidRowExpectation,
  type Scenario,
  type SourceLocation,
  type Step,
  type StepOp,
  type VmExpectation,
  type VmSpec,
} from './schema.js';
import {
  describe,
  parseAddr,
  parseBdf,
  parseBool,
  parseEnum,
  parseErrno,
  parseInt,
  parseIntValue,
  parseName,
  parseSize,
  parseString,
  parseVarDef,
  type Parsed,
} from './values.js';

export interface ScenarioIssue {
  loc: SourceLocation;
  /** Where in the document, e.g. `steps[3].bind.device`; empty for the whole file. */
  path: string;
  message: string;
}

export type ParseResult = { ok: true; scenario: Scenario } | { ok: false; issues: ScenarioIssue[] };

type Path = (string | number)[];
type Obj = Record<string, unknown>;

/** Guest RAM bounds: enough for tables and buffers, small enough for a test machine. */
const MIN_MEMORY = 1 << 20;
const MAX_MEMORY = 4 * 1024 ** 3;
/** Longest single DMA a step may ask for (it is chunked onto the device). */
export const MAX_DMA_LENGTH = 16 * 1024 * 1024;
/** Most pages one map/unmap step may touch. */
const MAX_PAGES = 65536;
const PASID_MAX = (1 << 20) - 1;
const DEFAULT_STEP_TIMEOUT_S = 10;

export function formatPath(path: Path): string {
  let s = '';
  for (const p of path) s += typeof p === 'number' ? `[${p}]` : s === '' ? p : `.${p}`;
  return s;
}

/** `file:line:col: path: message`, one issue per line. */
export function formatIssues(issues: readonly ScenarioIssue[]): string {
  return issues.map((i) => `${i.loc.file}:${i.loc.line}:${i.loc.col}: ${i.path ? i.path + ': ' : ''}${i.message}`).join('\n');
}

/** Read and parse a scenario file. A file that cannot be read is one issue at 1:1. */
export function loadScenario(file: string): ParseResult {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    return { ok: false, issues: [{ loc: { file, line: 1, col: 1 }, path: '', message: `cannot read the scenario: ${(e as Error).message}` }] };
  }
  return parseScenario(text, file);
}

export function parseScenario(text: string, file: string): ParseResult {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, intAsBigInt: true, uniqueKeys: true, prettyErrors: false });
  const at = (offset: number): SourceLocation => {
    const p = lc.linePos(offset);
    return { file, line: p.line, col: p.col };
  };
  if (doc.errors.length > 0) {
    return { ok: false, issues: doc.errors.map((e) => ({ loc: at(e.pos[0]), path: '', message: `syntax: ${firstLine(e.message)}` })) };
  }
  const c = new Checker(doc, lc, file);
  const scenario = c.scenario(doc.toJS({ maxAliasCount: 100 }) as unknown);
  if (c.issues.length > 0 || scenario === undefined) return { ok: false, issues: c.issues };
  return { ok: true, scenario };
}

function firstLine(s: string): string {
  return s.split('\n')[0]!.trim();
}

const STEP_COMMON = ['label', 'error'];

class Checker {
  readonly issues: ScenarioIssue[] = [];
  /** Variables defined so far (by earlier steps). */
  private readonly vars = new Set<string>();
  private readonly vms = new Map<string, VmSpec>();
  /** Live processes so far: name → VM name. */
  private readonly procs = new Map<string, string>();

  constructor(
    private readonly doc: Document,
    private readonly lc: LineCounter,
    private readonly file: string,
  ) {}

  // --- locations and issues -------------------------------------------------------------------

  /** Where `path` starts in the source; `atKey`: the last element's key rather than its value. */
  locOf(path: Path, atKey = false): SourceLocation {
    let node: unknown = this.doc.contents;
    let offset = (node as { range?: [number] } | null)?.range?.[0] ?? 0;
    for (const [i, key] of path.entries()) {
      let next: unknown;
      if (isMap(node) && atKey && i === path.length - 1) next = node.items.find((p) => (p.key as { value?: unknown } | null)?.value === key)?.key;
      else if (isMap(node)) next = node.get(key, true);
      else if (isSeq(node) && typeof key === 'number') next = node.items[key];
      if (next === undefined || next === null) break;
      node = next;
      const r = (node as { range?: [number] }).range;
      if (r) offset = r[0];
    }
    const p = this.lc.linePos(offset);
    return { file: this.file, line: p.line, col: p.col };
  }

  issue(path: Path, message: string, atKey = false): undefined {
    this.issues.push({ loc: this.locOf(path, atKey), path: formatPath(path), message });
    return undefined;
  }

  take<T>(p: Parsed<T>, path: Path): T | undefined {
    if (p.ok) return p.value;
    return this.issue(path, p.message);
  }

  map(v: unknown, path: Path, what: string): Obj | undefined {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return this.issue(path, `${what} must be a mapping, not ${describe(v)}`);
    return v as Obj;
  }

  list(v: unknown, path: Path, what: string): unknown[] | undefined {
    if (!Array.isArray(v)) return this.issue(path, `${what} must be a list, not ${describe(v)}`);
    return v;
  }

  /** Unknown keys and missing required keys; true when the mapping is usable. */
  keys(o: Obj, path: Path, what: string, allowed: readonly string[], required: readonly string[] = []): boolean {
    let good = true;
    for (const k of Object.keys(o)) {
      if (!allowed.includes(k)) {
        this.issue([...path, k], `unknown key '${k}' in ${what} (allowed: ${allowed.join(', ')})`, true);
        good = false;
      }
    }
    for (const k of required) {
      if (!(k in o)) {
        this.issue(path, `${what} needs '${k}'`);
        good = false;
      }
    }
    return good;
  }

  useVar(name: string, path: Path): void {
    if (!this.vars.has(name)) this.issue(path, `variable $${name} is not defined by an earlier step (define it with 'as:' or 'save:')`);
  }

  intv(o: Obj, key: string, path: Path, min = 0, max = PASID_MAX, what = key): IntValue | undefined {
    const v = this.take(parseIntValue(o[key], min, max, what), [...path, key]);
    if (v !== undefined && typeof v === 'object') this.useVar(v.ref, [...path, key]);
    return v;
  }

  addr(o: Obj, key: string, path: Path, what = key): AddrValue | undefined {
    const v = this.take(parseAddr(o[key], what), [...path, key]);
    if (v !== undefined && typeof v === 'object') this.useVar(v.ref, [...path, key]);
    return v;
  }

  int(o: Obj, key: string, path: Path, min: number, max: number, dflt?: number): number | undefined {
    if (!(key in o)) return dflt;
    return this.take(parseInt(o[key], min, max, key), [...path, key]);
  }

  bool(o: Obj, key: string, path: Path, dflt: boolean): boolean {
    if (!(key in o)) return dflt;
    return this.take(parseBool(o[key], key), [...path, key]) ?? dflt;
  }

  defVar(o: Obj, key: string, path: Path): string | undefined {
    if (!(key in o)) return undefined;
    const name = this.take(parseVarDef(o[key], key), [...path, key]);
    if (name !== undefined) this.vars.add(name);
    return name;
  }

  vm(o: Obj, key: string, path: Path, kind?: 'vtd' | 'virtio'): VmSpec | undefined {
    const name = this.take(parseName(o[key], key), [...path, key]);
    if (name === undefined) return undefined;
    const vm = this.vms.get(name);
    if (!vm) return this.issue([...path, key], `no VM named '${name}' (VMs: ${[...this.vms.keys()].join(', ') || 'none'})`);
    if (kind && vm.viommu !== kind) return this.issue([...path, key], `VM '${name}' has a ${vm.viommu === 'vtd' ? 'VT-d' : 'virtio-iommu'} vIOMMU; this action needs ${kind === 'vtd' ? 'VT-d' : 'virtio-iommu'}`);
    return vm;
  }

  process(o: Obj, key: string, path: Path): { name: string; vm: VmSpec } | undefined {
    const name = this.take(parseName(o[key], key), [...path, key]);
    if (name === undefined) return undefined;
    const vmName = this.procs.get(name);
    if (vmName === undefined) return this.issue([...path, key], `no live process named '${name}' at this step (create it with a 'process' step)`);
    return { name, vm: this.vms.get(vmName)! };
  }

  device(o: Obj, key: string, path: Path, vm: VmSpec | undefined): string | undefined {
    const bdf = this.take(parseBdf(o[key], key), [...path, key]);
    if (bdf === undefined || vm === undefined) return bdf;
    if (!vm.devices.some((d) => d.bdf === bdf)) return this.issue([...path, key], `VM '${vm.name}' has no device ${bdf} (devices: ${vm.devices.map((d) => d.bdf).join(', ')})`);
    return bdf;
  }

  bytes(v: unknown, path: Path, what: string): BytesSpec | undefined {
    const o = this.map(v, path, what);
    if (!o) return undefined;
    const forms = ['hex', 'text', 'pattern', 'random'].filter((k) => k in o);
    if (forms.length !== 1) return this.issue(path, `${what} needs exactly one of hex, text, pattern, random (found ${forms.join(', ') || 'none'})`);
    const form = forms[0]!;
    if (form === 'hex' || form === 'text') {
      if (!this.keys(o, path, what, [form])) return undefined;
      const s = this.take(parseString(String(o[form] ?? ''), form), [...path, form]);
      if (s === undefined) return undefined;
      if (form === 'text') return { text: s };
      const hex = s.replace(/\s+/g, '');
      if (!/^([0-9a-fA-F]{2})+$/.test(hex)) return this.issue([...path, form], `hex must be pairs of hex digits, not '${s}'`);
      return { hex };
    }
    if (!this.keys(o, path, what, [form, 'length'], [form, 'length'])) return undefined;
    const length = this.int(o, 'length', path, 1, MAX_DMA_LENGTH);
    const n = this.int(o, form, path, 0, form === 'pattern' ? 255 : 0xffff_ffff);
    if (length === undefined || n === undefined) return undefined;
    return form === 'pattern' ? { pattern: n, length } : { random: n, length };
  }

  matcher<T>(v: unknown, path: Path, parse: (x: unknown) => T | undefined): Matcher<T> | undefined {
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
      const o = v as Obj;
      if (!this.keys(o, path, 'a matcher', ['not'], ['not'])) return undefined;
      const x = parse(o.not);
      return x === undefined ? undefined : { not: x };
    }
    const x = parse(v);
    return x === undefined ? undefined : { eq: x };
  }

  // --- the document ---------------------------------------------------------------------------

  scenario(raw: unknown): Scenario | undefined {
    const o = this.map(raw, [], 'a scenario');
    if (!o) return undefined;
    this.keys(o, [], 'the scenario', ['name', 'description', 'host', 'timeout', 'vms', 'steps'], ['name', 'vms', 'steps']);
    const name = this.take(parseString(o.name, 'name'), ['name']);
    const description = 'description' in o ? this.take(parseString(o.description, 'description'), ['description']) : undefined;
    let pasidBits = 20;
    let spawn = false;
    if ('host' in o) {
      const h = this.map(o.host, ['host'], 'host');
      if (h) {
        this.keys(h, ['host'], 'host', ['pasidBits', 'spawn']);
        pasidBits = this.int(h, 'pasidBits', ['host'], 1, 20, 20) ?? 20;
        spawn = this.bool(h, 'spawn', ['host'], false);
      }
    }
    const timeoutS = this.int(o, 'timeout', [], 1, 3600, DEFAULT_STEP_TIMEOUT_S) ?? DEFAULT_STEP_TIMEOUT_S;
    const vmsRaw = this.list(o.vms, ['vms'], 'vms');
    const vms: VmSpec[] = [];
    if (vmsRaw) {
      if (vmsRaw.length === 0) this.issue(['vms'], 'a scenario needs at least one VM');
      vmsRaw.forEach((v, i) => {
        const vm = this.vmSpec(v, ['vms', i]);
        if (vm) vms.push(vm);
      });
    }
    const stepsRaw = this.list(o.steps, ['steps'], 'steps');
    const steps: Step[] = [];
    if (stepsRaw) {
      if (stepsRaw.length === 0) this.issue(['steps'], 'a scenario needs at least one step');
      stepsRaw.forEach((s, i) => {
        const step = this.step(s, i);
        if (step) steps.push(step);
      });
    }
    if (name === undefined || this.issues.length > 0) return undefined;
    const sc: Scenario = { name, file: this.file, host: { pasidBits, spawn }, stepTimeoutMs: timeoutS * 1000, vms, steps };
    if (description !== undefined) sc.description = description;
    return sc;
  }

  vmSpec(raw: unknown, path: Path): VmSpec | undefined {
    const o = this.map(raw, path, 'a VM');
    if (!o) return undefined;
    if (!this.keys(o, path, 'a VM', ['name', 'viommu', 'memory', 'pasidQuota', 'vcmd', 'devices', 'pageRequests'], ['name', 'viommu'])) return undefined;
    const name = this.take(parseName(o.name, 'name'), [...path, 'name']);
    if (name !== undefined && this.vms.has(name)) this.issue([...path, 'name'], `two VMs are named '${name}'`);
    const viommu = this.take(parseEnum(o.viommu, ['vtd', 'virtio'] as const, 'viommu'), [...path, 'viommu']);
    let memory = 64 * 1024 * 1024;
    if ('memory' in o) {
      const m = this.take(parseSize(o.memory, 'memory'), [...path, 'memory']);
      if (m !== undefined) {
        if (m < MIN_MEMORY || m > MAX_MEMORY || m % 4096 !== 0) this.issue([...path, 'memory'], `memory must be a multiple of 4 KiB in 1M..4G, not ${m}`);
        else memory = m;
      }
    }
    const pasidQuota = this.int(o, 'pasidQuota', path, 0, PASID_MAX, 1024) ?? 1024;
    let vcmd: VmSpec['vcmd'] = '3.1';
    if ('vcmd' in o) {
      if (viommu === 'virtio') this.issue([...path, 'vcmd'], "'vcmd' applies to VT-d VMs only");
      else if (o.vcmd === false) vcmd = false;
      else {
        const s = typeof o.vcmd === 'number' ? o.vcmd.toFixed(1) : o.vcmd;
        vcmd = this.take(parseEnum(s, ['3.1', '3.3'] as const, 'vcmd'), [...path, 'vcmd']) ?? '3.1';
      }
    }
    let devices: VmSpec['devices'] = [{ bdf: '00:03.0', kind: 'pf' }];
    if ('devices' in o) {
      const list = this.list(o.devices, [...path, 'devices'], 'devices');
      if (list) {
        devices = [];
        list.forEach((d, i) => {
          const dp = [...path, 'devices', i];
          const dm = this.map(d, dp, 'a device');
          if (!dm || !this.keys(dm, dp, 'a device', ['bdf', 'kind'], ['bdf'])) return;
          const bdf = this.take(parseBdf(dm.bdf, 'bdf'), [...dp, 'bdf']);
          const kind: DeviceKind = 'kind' in dm ? (this.take(parseEnum(dm.kind, ['pf', 'adi'] as const, 'kind'), [...dp, 'kind']) ?? 'pf') : 'pf';
          if (bdf === undefined) return;
          if (devices.some((x) => x.bdf === bdf)) this.issue([...dp, 'bdf'], `device ${bdf} is listed twice`);
          devices.push({ bdf, kind });
        });
        if (list.length === 0) this.issue([...path, 'devices'], 'a VM needs at least one device');
      }
    }
    const pageRequests = 'pageRequests' in o ? (this.take(parseEnum(o.pageRequests, PAGE_REQUEST_POLICIES, 'pageRequests'), [...path, 'pageRequests']) ?? 'serve') : 'serve';
    if (name === undefined || viommu === undefined) return undefined;
    const vm: VmSpec = { name, viommu, memory, pasidQuota, vcmd: viommu === 'vtd' ? vcmd : false, devices, pageRequests, loc: this.locOf(path) };
    this.vms.set(name, vm);
    return vm;
  }

  // --- steps -------------------------------------------------------------------------------

  step(raw: unknown, index: number): Step | undefined {
    const path: Path = ['steps', index];
    const o = this.map(raw, path, 'a step');
    if (!o) return undefined;
    const keys = Object.keys(o);
    if (keys.length !== 1 || !(STEP_OPS as readonly string[]).includes(keys[0]!)) {
      const unknown = keys.filter((k) => !(STEP_OPS as readonly string[]).includes(k));
      return this.issue(path, `a step is a mapping with exactly one action (${STEP_OPS.join(', ')}); found ${keys.length === 0 ? 'none' : keys.join(', ')}${unknown.length ? ` (unknown: ${unknown.join(', ')})` : ''}`);
    }
    const op = keys[0] as StepOp;
    const ap: Path = [...path, op];
    let args = o[op];
    // Scalar shorthands: `wait: vm0`, `sleep: 100`.
    if (op === 'wait' && typeof args === 'string') args = { vm: args };
    if (op === 'sleep' && (typeof args === 'bigint' || typeof args === 'number')) args = { ms: args };
    const a = this.map(args ?? {}, ap, `'${op}' arguments`);
    if (!a) return undefined;
    const base = { index, loc: this.locOf(path) } as { index: number; loc: SourceLocation; label?: string; error?: ExpectedError };
    if ('label' in a) base.label = this.take(parseString(a.label, 'label'), [...ap, 'label']);
    if ('error' in a) base.error = this.expectedError(a.error, [...ap, 'error']);
    const before = this.issues.length;
    const step = this.stepBody(op, a, ap, base);
    return this.issues.length === before ? step : undefined;
  }

  expectedError(v: unknown, path: Path): ExpectedError | undefined {
    if (typeof v === 'string') {
      if ((VIRTIO_STATUS_NAMES as readonly string[]).includes(v)) return { status: v as ExpectedError['status'] };
      const errno = this.take(parseErrno(v, 'error'), path);
      return errno ? { errno } : undefined;
    }
    const o = this.map(v, path, 'error');
    if (!o || !this.keys(o, path, 'error', ['errno', 'status', 'message'])) return undefined;
    const e: ExpectedError = {};
    if ('errno' in o) e.errno = this.take(parseErrno(o.errno, 'errno'), [...path, 'errno']);
    if ('status' in o) e.status = this.take(parseEnum(o.status, VIRTIO_STATUS_NAMES, 'status'), [...path, 'status']);
    if ('message' in o) e.message = this.take(parseString(o.message, 'message'), [...path, 'message']);
    if (Object.keys(o).length === 0) this.issue(path, 'error needs errno, status or message');
    return e;
  }

  stepBody(op: StepOp, a: Obj, p: Path, base: { index: number; loc: SourceLocation; label?: string; error?: ExpectedError }): Step | undefined {
    const K = (...k: string[]) => [...STEP_COMMON, ...k];
    switch (op) {
      case 'process': {
        if (!this.keys(a, p, "'process'", K('vm', 'name', 'levels'), ['vm', 'name'])) return undefined;
        const vm = this.vm(a, 'vm', p);
        const name = this.take(parseName(a.name, 'name'), [...p, 'name']);
        const levels = this.int(a, 'levels', p, 4, 5, 4) as 4 | 5 | undefined;
        if (!vm || !name || !levels) return undefined;
        if (this.procs.has(name)) return this.issue([...p, 'name'], `a live process is already named '${name}'`);
        if (!base.error) this.procs.set(name, vm.name);
        return { ...base, op, vm: vm.name, name, levels };
      }
      case 'exit': {
        if (!this.keys(a, p, "'exit'", K('process'), ['process'])) return undefined;
        const pr = this.process(a, 'process', p);
        if (!pr) return undefined;
        if (!base.error) this.procs.delete(pr.name);
        return { ...base, op, process: pr.name };
      }
      case 'map': {
        if (!this.keys(a, p, "'map'", K('process', 'va', 'pages', 'size', 'write', 'user', 'exec', 'fill'), ['process', 'va'])) return undefined;
        const pr = this.process(a, 'process', p);
        const va = this.addr(a, 'va', p);
        const pages = this.int(a, 'pages', p, 1, MAX_PAGES, 1);
        const size = 'size' in a ? this.take(parseEnum(a.size, ['4K', '2M', '1G'] as const, 'size'), [...p, 'size']) : ('4K' as PageSize);
        const fill = 'fill' in a ? this.bytes(a.fill, [...p, 'fill'], 'fill') : undefined;
        if (!pr || va === undefined || !pages || !size) return undefined;
        const step: Step = { ...base, op, process: pr.name, va, pages, size, write: this.bool(a, 'write', p, true), user: this.bool(a, 'user', p, true), exec: this.bool(a, 'exec', p, false) };
        if (fill) step.fill = fill;
        return step;
      }
      case 'unmap': {
        if (!this.keys(a, p, "'unmap'", K('process', 'va', 'pages', 'flush'), ['process', 'va'])) return undefined;
        const pr = this.process(a, 'process', p);
        const va = this.addr(a, 'va', p);
        const pages = this.int(a, 'pages', p, 1, MAX_PAGES, 1);
        if (!pr || va === undefined || !pages) return undefined;
        return { ...base, op, process: pr.name, va, pages, flush: this.bool(a, 'flush', p, true) };
      }
      case 'alloc': {
        if (!this.keys(a, p, "'alloc'", K('vm', 'count', 'as'), ['vm'])) return undefined;
        const vm = this.vm(a, 'vm', p);
        const count = this.int(a, 'count', p, 1, PASID_MAX, 1);
        if (count !== undefined && count > 1 && 'as' in a) return this.issue([...p, 'as'], "'as' names one PASID; use it with count 1");
        const as = this.defVar(a, 'as', p);
        if (!vm || !count) return undefined;
        const step: Step = { ...base, op, vm: vm.name, count };
        if (as) step.as = as;
        return step;
      }
      case 'free': {
        if (!this.keys(a, p, "'free'", K('vm', 'pasid'), ['vm', 'pasid'])) return undefined;
        const vm = this.vm(a, 'vm', p);
        const pasid = this.intv(a, 'pasid', p);
        if (!vm || pasid === undefined) return undefined;
        return { ...base, op, vm: vm.name, pasid };
      }
      case 'bind': {
        if (!this.keys(a, p, "'bind'", K('process', 'device', 'pasid', 'as'), ['process', 'device'])) return undefined;
        const pr = this.process(a, 'process', p);
        const device = this.device(a, 'device', p, pr?.vm);
        const pasid = 'pasid' in a ? this.intv(a, 'pasid', p, 1) : undefined;
        const as = this.defVar(a, 'as', p);
        if (!pr || !device || ('pasid' in a && pasid === undefined)) return undefined;
        const step: Step = { ...base, op, process: pr.name, device };
        if (pasid !== undefined) step.pasid = pasid;
        if (as) step.as = as;
        return step;
      }
      case 'unbind': {
        if (!this.keys(a, p, "'unbind'", K('process', 'device'), ['process', 'device'])) return undefined;
        const pr = this.process(a, 'process', p);
        const device = this.device(a, 'device', p, pr?.vm);
        if (!pr || !device) return undefined;
        return { ...base, op, process: pr.name, device };
      }
      case 'flush': {
        if (!this.keys(a, p, "'flush'", K('vm', 'cache', 'pasid', 'va', 'pages', 'device'), ['vm', 'cache'])) return undefined;
        const vm = this.vm(a, 'vm', p, 'vtd');
        const cache = this.take(parseEnum(a.cache, ['pasid', 'piotlb', 'iotlb', 'devtlb'] as const, 'cache'), [...p, 'cache']);
        const pasid = 'pasid' in a ? this.intv(a, 'pasid', p) : undefined;
        const va = 'va' in a ? this.addr(a, 'va', p) : undefined;
        const pages = this.int(a, 'pages', p, 1, MAX_PAGES);
        const device = 'device' in a ? this.device(a, 'device', p, vm) : undefined;
        const ranged = cache === 'piotlb' || cache === 'devtlb';
        if (ranged && !('pasid' in a)) this.issue(p, `a '${cache}' flush needs 'pasid'`);
        if (('va' in a || 'pages' in a) && !ranged) this.issue(p, "'va'/'pages' apply to 'piotlb' and 'devtlb' flushes only");
        if ('pages' in a && !('va' in a)) this.issue([...p, 'pages'], "'pages' needs 'va'");
        if (cache === 'devtlb' && !('device' in a)) this.issue(p, "a 'devtlb' flush needs 'device'");
        if (cache !== 'devtlb' && 'device' in a) this.issue([...p, 'device'], "'device' applies to 'devtlb' flushes only");
        if (cache === 'iotlb' && 'pasid' in a) this.issue([...p, 'pasid'], "an 'iotlb' flush is global; it takes no 'pasid'");
        if (!vm || !cache) return undefined;
        const step: Step = { ...base, op, vm: vm.name, cache };
        if (pasid !== undefined) step.pasid = pasid;
        if (va !== undefined) step.va = va;
        if (pages !== undefined) step.pages = pages;
        if (device !== undefined) step.device = device;
        return step;
      }
      case 'wait': {
        if (!this.keys(a, p, "'wait'", K('vm'), ['vm'])) return undefined;
        const vm = this.vm(a, 'vm', p, 'vtd');
        return vm ? { ...base, op, vm: vm.name } : undefined;
      }
      case 'sleep': {
        if (!this.keys(a, p, "'sleep'", K('ms'), ['ms'])) return undefined;
        const ms = this.int(a, 'ms', p, 0, 60_000);
        return ms === undefined ? undefined : { ...base, op, ms };
      }
      case 'page-requests': {
        if (!this.keys(a, p, "'page-requests'", K('vm', 'policy'), ['vm', 'policy'])) return undefined;
        const vm = this.vm(a, 'vm', p);
        const policy = this.take(parseEnum(a.policy, PAGE_REQUEST_POLICIES, 'policy'), [...p, 'policy']);
        return vm && policy ? { ...base, op, vm: vm.name, policy } : undefined;
      }
      case 'dma':
        return this.dmaStep(a, p, base);
      case 'virtio-attach':
      case 'virtio-detach': {
        if (!this.keys(a, p, `'${op}'`, K('vm', 'device', 'domain'), ['vm', 'device', 'domain'])) return undefined;
        const vm = this.vm(a, 'vm', p, 'virtio');
        const device = this.device(a, 'device', p, vm);
        const domain = this.int(a, 'domain', p, 0, 0xffff_ffff);
        return vm && device && domain !== undefined ? { ...base, op, vm: vm.name, device, domain } : undefined;
      }
      case 'virtio-map': {
        if (!this.keys(a, p, "'virtio-map'", K('vm', 'domain', 'iova', 'length', 'gpa', 'as', 'read', 'write'), ['vm', 'domain', 'iova', 'length'])) return undefined;
        const vm = this.vm(a, 'vm', p, 'virtio');
        const domain = this.int(a, 'domain', p, 0, 0xffff_ffff);
        const iova = this.addr(a, 'iova', p);
        const length = this.take(parseSize(a.length, 'length'), [...p, 'length']);
        const gpa = 'gpa' in a ? this.addr(a, 'gpa', p) : undefined;
        if ('gpa' in a && 'as' in a) this.issue([...p, 'as'], "'as' names the fresh pages a map without 'gpa' allocates");
        const as = this.defVar(a, 'as', p);
        if (!vm || domain === undefined || iova === undefined || length === undefined) return undefined;
        if (length < 1 || length > MAX_DMA_LENGTH) return this.issue([...p, 'length'], `length must be 1..${MAX_DMA_LENGTH}`);
        const step: Step = { ...base, op, vm: vm.name, domain, iova, length, read: this.bool(a, 'read', p, true), write: this.bool(a, 'write', p, true) };
        if (gpa !== undefined) step.gpa = gpa;
        if (as) step.as = as;
        return step;
      }
      case 'virtio-unmap': {
        if (!this.keys(a, p, "'virtio-unmap'", K('vm', 'domain', 'iova', 'length'), ['vm', 'domain', 'iova', 'length'])) return undefined;
        const vm = this.vm(a, 'vm', p, 'virtio');
        const domain = this.int(a, 'domain', p, 0, 0xffff_ffff);
        const iova = this.addr(a, 'iova', p);
        const length = this.take(parseSize(a.length, 'length'), [...p, 'length']);
        if (!vm || domain === undefined || iova === undefined || length === undefined) return undefined;
        return { ...base, op, vm: vm.name, domain, iova, length };
      }
      case 'expect':
        return this.expectStep(a, p, base);
    }
  }

  dmaStep(a: Obj, p: Path, base: { index: number; loc: SourceLocation; label?: string; error?: ExpectedError }): DmaStep | undefined {
    const allowed = [...STEP_COMMON, 'vm', 'process', 'device', 'pasid', 'op', 'va', 'iova', 'addr', 'src', 'dst', 'length', 'data', 'value', 'expect', 'equal', 'fault', 'check'];
    if (!this.keys(a, p, "'dma'", allowed, ['device', 'op'])) return undefined;
    const kind = this.take(parseEnum(a.op, ['read', 'write', 'fill', 'copy', 'compare'] as const, 'op'), [...p, 'op']) as DmaOp | undefined;
    if ('process' in a && 'vm' in a) return this.issue([...p, 'vm'], "give 'process' or 'vm', not both (a process belongs to one VM)");
    if ('process' in a && 'pasid' in a) return this.issue([...p, 'pasid'], "a process DMA uses the PASID the process is bound with; drop 'pasid'");
    const pr = 'process' in a ? this.process(a, 'process', p) : undefined;
    const vm = pr ? pr.vm : 'vm' in a ? this.vm(a, 'vm', p) : this.issue(p, "'dma' needs 'process' (SVA) or 'vm'");
    const device = this.device(a, 'device', p, vm);
    const pasid = 'pasid' in a ? this.intv(a, 'pasid', p) : undefined;
    // Target address: va / iova / addr (one), or dst for copy/compare.
    const addrKeys = ['va', 'iova', 'addr', 'dst'].filter((k) => k in a);
    const two = kind === 'copy' || kind === 'compare';
    if (addrKeys.length !== 1) return this.issue(p, two ? `'${kind}' needs 'src' and 'dst'` : `'dma' needs exactly one target address: va, iova or addr`);
    if (two && addrKeys[0] !== 'dst') return this.issue([...p, addrKeys[0]!], `'${kind}' takes 'src' and 'dst'`);
    if (!two && (addrKeys[0] === 'dst' || 'src' in a)) return this.issue(p, `'src'/'dst' apply to copy and compare only`);
    const addr = this.addr(a, addrKeys[0]!, p);
    const src = two ? ('src' in a ? this.addr(a, 'src', p) : this.issue(p, `'${kind}' needs 'src'`)) : undefined;
    let data: BytesSpec | undefined;
    let length: number | undefined;
    if (kind === 'write') {
      if (!('data' in a)) return this.issue(p, "a DMA write needs 'data'");
      data = this.bytes(a.data, [...p, 'data'], 'data');
      if (data) length = bytesLength(data);
      if ('length' in a) this.issue([...p, 'length'], "a DMA write's length is its data's");
    } else {
      if ('data' in a) this.issue([...p, 'data'], "'data' applies to op write only");
      length = 'length' in a ? this.take(parseSize(a.length, 'length'), [...p, 'length']) : this.issue(p, `a DMA ${kind ?? ''} needs 'length'`);
    }
    if (length !== undefined && (length < 1 || length > MAX_DMA_LENGTH)) this.issue([...p, 'length'], `length must be 1..${MAX_DMA_LENGTH}`);
    const value = kind === 'fill' ? this.int(a, 'value', p, 0, 255, 0) : 'value' in a ? this.issue([...p, 'value'], "'value' applies to op fill only") : undefined;
    const expectData = 'expect' in a ? (kind === 'read' ? this.bytes(a.expect, [...p, 'expect'], 'expect') : this.issue([...p, 'expect'], "'expect' (data) applies to op read only")) : undefined;
    if (expectData && length !== undefined && bytesLength(expectData) !== length) this.issue([...p, 'expect'], `expected data has ${bytesLength(expectData)} bytes; the read has ${length}`);
    if ('equal' in a && kind !== 'compare') this.issue([...p, 'equal'], "'equal' applies to op compare only");
    const equal = kind === 'compare' ? this.bool(a, 'equal', p, true) : undefined;
    let fault: ExpectedFault | undefined;
    if ('fault' in a) {
      if (a.fault === true) fault = {};
      else {
        const f = this.map(a.fault, [...p, 'fault'], 'fault');
        if (f && this.keys(f, [...p, 'fault'], 'fault', ['reason', 'addr'])) {
          fault = {};
          if ('reason' in f) fault.reason = this.intv(f, 'reason', [...p, 'fault'], 0, 0xff);
          if ('addr' in f) fault.addr = this.addr(f, 'addr', [...p, 'fault']);
        }
      }
    }
    if (fault && base.error) this.issue([...p, 'fault'], "give 'fault' (the device's request is blocked) or 'error' (the request is refused), not both");
    const check = this.bool(a, 'check', p, pr !== undefined && fault === undefined);
    if (check && !pr) this.issue([...p, 'check'], "'check' reads the result through a process's page tables; it needs 'process'");
    if (!vm || !device || !kind || addr === undefined || length === undefined || (two && src === undefined)) return undefined;
    const step: DmaStep = { ...base, op: 'dma', vm: vm.name, device, kind, addr, length, check };
    if (pr) step.process = pr.name;
    if (pasid !== undefined) step.pasid = pasid;
    if (src !== undefined) step.src = src;
    if (data) step.data = data;
    if (value !== undefined) step.value = value;
    if (expectData) step.expectData = expectData;
    if (equal !== undefined) step.equal = equal;
    if (fault) step.fault = fault;
    return step;
  }

  memoryRef(o: Obj, p: Path): MemoryRef | undefined {
    if ('process' in o) {
      if ('gpa' in o) return this.issue([...p, 'gpa'], "give 'process' + 'va' or 'vm' + 'gpa'");
      const pr = this.process(o, 'process', p);
      const va = 'va' in o ? this.addr(o, 'va', p) : this.issue(p, "a memory check in a process needs 'va'");
      return pr && va !== undefined ? { vm: pr.vm.name, process: pr.name, va } : undefined;
    }
    const vm = 'vm' in o ? this.vm(o, 'vm', p) : this.issue(p, "a memory location needs 'process' + 'va' or 'vm' + 'gpa'");
    const gpa = 'gpa' in o ? this.addr(o, 'gpa', p) : this.issue(p, "a memory location in a VM needs 'gpa'");
    return vm && gpa !== undefined ? { vm: vm.name, gpa } : undefined;
  }

  expectStep(a: Obj, p: Path, base: { index: number; loc: SourceLocation; label?: string; error?: ExpectedError }): ExpectStep | undefined {
    const vmKeys = ['connected', 'used', 'quota', 'pasids', 'pasid', 'fault', 'noFaults', 'pageRequests'];
    if (!this.keys(a, p, "'expect'", ['label', 'capacity', 'vmCount', 'vm', 'memory', ...vmKeys])) return undefined;
    if (base.error) return this.issue([...p, 'error'], "an 'expect' step cannot expect an error");
    const step: ExpectStep = { ...base, op: 'expect', vmChecks: [], memory: [] };
    if ('capacity' in a) {
      const c = this.map(a.capacity, [...p, 'capacity'], 'capacity');
      if (c && this.keys(c, [...p, 'capacity'], 'capacity', ['total', 'available'])) {
        step.capacity = {};
        if ('total' in c) step.capacity.total = this.int(c, 'total', [...p, 'capacity'], 0, PASID_MAX);
        if ('available' in c) step.capacity.available = this.int(c, 'available', [...p, 'capacity'], 0, PASID_MAX);
      }
    }
    if ('vmCount' in a) step.vms = this.int(a, 'vmCount', p, 0, 100_000);
    const hasVmKeys = vmKeys.some((k) => k in a);
    if (hasVmKeys && !('vm' in a)) this.issue(p, `${vmKeys.filter((k) => k in a).join(', ')} need 'vm' (which VM to check)`);
    if ('vm' in a) {
      const vm = this.vm(a, 'vm', p);
      if (vm) step.vmChecks.push(this.vmExpectation(vm, a, p));
    }
    if ('memory' in a) {
      const list = Array.isArray(a.memory) ? a.memory : [a.memory];
      list.forEach((m, i) => {
        const mp = Array.isArray(a.memory) ? [...p, 'memory', i] : [...p, 'memory'];
        const o = this.map(m, mp, 'a memory check');
        if (!o || !this.keys(o, mp, 'a memory check', ['process', 'va', 'vm', 'gpa', 'equals', 'length'], ['equals'])) return;
        const at = this.memoryRef(o, mp);
        const eq = this.map(o.equals, [...mp, 'equals'], 'equals');
        if (!eq || !at) return;
        if ('process' in eq || 'gpa' in eq) {
          if (!this.keys(eq, [...mp, 'equals'], 'equals', ['process', 'va', 'vm', 'gpa'])) return;
          const other = this.memoryRef(eq, [...mp, 'equals']);
          const length = 'length' in o ? this.take(parseSize(o.length, 'length'), [...mp, 'length']) : this.issue(mp, "comparing two locations needs 'length'");
          if (other && length !== undefined) step.memory.push({ at, equals: { sameAs: other, length } });
        } else {
          if ('length' in o) this.issue([...mp, 'length'], "the length comes from 'equals' here");
          const bytes = this.bytes(o.equals, [...mp, 'equals'], 'equals');
          if (bytes) step.memory.push({ at, equals: bytes });
        }
      });
    }
    if (!hasVmKeys && !step.capacity && step.vms === undefined && step.vmChecks.length === 0 && step.memory.length === 0) this.issue(p, "'expect' checks nothing (give capacity, vmCount, vm + checks, or memory)");
    return step;
  }

  vmExpectation(vm: VmSpec, a: Obj, p: Path): VmExpectation {
    const e: VmExpectation = { vm: vm.name, rows: [] };
    if ('connected' in a) e.connected = this.bool(a, 'connected', p, true);
    if ('used' in a) e.used = this.int(a, 'used', p, 0, PASID_MAX);
    if ('quota' in a) e.quota = this.int(a, 'quota', p, 0, PASID_MAX);
    if ('pasids' in a) e.pasids = this.int(a, 'pasids', p, 0, PASID_MAX);
    if ('pageRequests' in a) e.pageRequests = this.int(a, 'pageRequests', p, 0, Number.MAX_SAFE_INTEGER);
    if ('noFaults' in a) e.noFaults = this.bool(a, 'noFaults', p, true);
    if ('fault' in a) {
      const f = this.map(a.fault, [...p, 'fault'], 'fault');
      if (f && this.keys(f, [...p, 'fault'], 'fault', ['reason', 'addr', 'pasid'])) {
        const fe: VmExpectation['fault'] = {};
        if ('reason' in f) fe.reason = this.intv(f, 'reason', [...p, 'fault'], 0, 0xff);
        if ('addr' in f) fe.addr = this.addr(f, 'addr', [...p, 'fault']);
        if ('pasid' in f) fe.pasid = this.intv(f, 'pasid', [...p, 'fault']);
        e.fault = fe;
      }
    }
    if ('pasid' in a) {
      const list = Array.isArray(a.pasid) ? a.pasid : [a.pasid];
      list.forEach((r, i) => {
        const rp = Array.isArray(a.pasid) ? [...p, 'pasid', i] : [...p, 'pasid'];
        const row = this.rowExpectation(r, rp);
        if (row) e.rows.push(row);
      });
    }
    return e;
  }

  rowExpectation(raw: unknown, p: Path): PasidRowExpectation | undefined {
    const o = this.map(raw, p, 'a PASID row expectation');
    if (!o || !this.keys(o, p, 'a PASID row expectation', ['gpasid', 'hpasid', 'absent', 'state', 'refs', 'users', 'bindings', 'save'])) return undefined;
    const row: PasidRowExpectation = { absent: this.bool(o, 'absent', p, false), loc: this.locOf(p) };
    const pasidVal = (key: string, allowNull: boolean) => (x: unknown) => {
      if (allowNull && x === null) return null;
      const v = this.take(parseIntValue(x, 0, PASID_MAX, key), [...p, key]);
      if (v !== undefined && typeof v === 'object') this.useVar(v.ref, [...p, key]);
      return v;
    };
    if ('gpasid' in o) row.gpasid = this.matcher<IntValue | null>(o.gpasid, [...p, 'gpasid'], pasidVal('gpasid', true) as (x: unknown) => IntValue | null | undefined);
    if ('hpasid' in o) row.hpasid = this.matcher<IntValue>(o.hpasid, [...p, 'hpasid'], pasidVal('hpasid', false) as (x: unknown) => IntValue | undefined);
    const selects = (row.gpasid && 'eq' in row.gpasid) || (row.hpasid && 'eq' in row.hpasid);
    if (!selects) this.issue(p, 'a PASID row expectation needs gpasid or hpasid as a plain value to pick the row');
    if ('state' in o) row.state = this.matcher(o.state, [...p, 'state'], (x) => this.take(parseEnum(x, ['idle', 'active', 'free-pending'] as const, 'state'), [...p, 'state']));
    if ('refs' in o) row.refs = this.matcher(o.refs, [...p, 'refs'], (x) => this.take(parseInt(x, 0, 1 << 30, 'refs'), [...p, 'refs']));
    if ('users' in o) {
      const l = this.list(o.users, [...p, 'users'], 'users');
      if (l) row.users = l.map((u, i) => this.take(parseString(u, 'a user'), [...p, 'users', i]) ?? '');
    }
    if ('bindings' in o) {
      if (Array.isArray(o.bindings)) {
        row.bindings = [];
        o.bindings.forEach((b, i) => {
          const bp = [...p, 'bindings', i];
          const bo = this.map(b, bp, 'a binding');
          if (!bo || !this.keys(bo, bp, 'a binding', ['bdf', 'pgtt'], ['bdf'])) return;
          const bdf = this.take(parseBdf(bo.bdf, 'bdf'), [...bp, 'bdf']);
          const pgtt = 'pgtt' in bo ? this.take(parseEnum(bo.pgtt, ['nested', 'sl', 'pt'] as const, 'pgtt'), [...bp, 'pgtt']) : undefined;
          if (bdf) (row.bindings as { bdf: string; pgtt?: 'nested' | 'sl' | 'pt' }[]).push(pgtt ? { bdf, pgtt } : { bdf });
        });
      } else row.bindings = this.int(o, 'bindings', p, 0, 1 << 16);
    }
    if (row.absent && Object.keys(o).some((k) => !['gpasid', 'hpasid', 'absent'].includes(k))) this.issue(p, 'an absent row has nothing else to check');
    if ('save' in o) {
      const s = this.map(o.save, [...p, 'save'], 'save');
      if (s && this.keys(s, [...p, 'save'], 'save', ['hpasid', 'gpasid'])) {
        row.save = {};
        if ('hpasid' in s) row.save.hpasid = this.defVar(s, 'hpasid', [...p, 'save']);
        if ('gpasid' in s) row.save.gpasid = this.defVar(s, 'gpasid', [...p, 'save']);
      }
    }
    return row;
  }
}

export function bytesLength(b: BytesSpec): number {
  if ('hex' in b) return b.hex.length / 2;
  if ('text' in b) return new TextEncoder().encode(b.text).length;
  return b.length;
}
