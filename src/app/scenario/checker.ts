/**
 * The field level of the scenario parser, shared by the document parser (parse.ts) and every step
 * record (ops-*.ts): issues at file:line:col and path, the allowed and required keys of a mapping,
 * typed readers for each kind of field, and the names defined so far (VMs, live processes,
 * variables) that later fields must refer to.
 *
 * Errors do not cascade (docs/scenarios.md, "Malformed files"):
 * - a misspelled key is reported once, with the key it most likely meant; the value is then read
 *   under that key, so the entry's other fields are still checked and nothing says the meant key
 *   is missing. Issues about the guessed key itself are muted until the typo is fixed.
 * - a definition survives errors in its entry: a VM whose `viommu` is wrong, a process whose VM
 *   is unknown still define their names, so later references to them add nothing; only the
 *   first problem is reported.
 */
import { isMap, isSeq, type Document, type LineCounter } from 'yaml';
import { PASID_MAX } from '../../vtd/pasid-entry.js';
import { closest } from './suggest.js';
import type { AddrValue, BytesSpec, IntValue, Matcher, SourceLocation, VmSpec } from './types.js';
import { MAX_DMA_LENGTH } from './types.js';
import { describe, parseAddr, parseBdf, parseBool, parseInt, parseIntValue, parseName, parseString, parseVarDef, type Parsed } from './values.js';

export interface ScenarioIssue {
  loc: SourceLocation;
  /** Where in the document, e.g. `steps[3].bind.device`; empty for the whole file. */
  path: string;
  message: string;
}

export type Path = (string | number)[];
export type Obj = Record<string, unknown>;

export function formatPath(path: Path): string {
  let s = '';
  for (const p of path) s += typeof p === 'number' ? `[${p}]` : s === '' ? p : `.${p}`;
  return s;
}

/** `file:line:col: path: message`, one issue per line. */
export function formatIssues(issues: readonly ScenarioIssue[]): string {
  return issues.map((i) => `${i.loc.file}:${i.loc.line}:${i.loc.col}: ${i.path ? i.path + ': ' : ''}${i.message}`).join('\n');
}

/** How a message names a mapping: `step 3` for a step's arguments, `fault of step 3` inside them. */
function where(path: Path, what: string): string {
  if (path[0] !== 'steps' || typeof path[1] !== 'number') return what;
  return path.length <= 3 ? `step ${path[1] + 1}` : `${what} of step ${path[1] + 1}`;
}

export class Checker {
  readonly issues: ScenarioIssue[] = [];
  /** Variables defined so far (by earlier steps). */
  private readonly vars = new Set<string>();
  /** VMs by name; undefined for a VM whose entry was rejected (its name still counts). */
  private readonly vms = new Map<string, VmSpec | undefined>();
  /** Live processes so far: name → VM, undefined when the VM is not known. */
  private readonly procs = new Map<string, VmSpec | undefined>();
  /** Paths of keys read under a guessed name in the current entry: their issues are muted. */
  private muted: string[] = [];
  private quiet = 0;

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
    if (this.quiet > 0) return undefined;
    const s = formatPath(path);
    if (this.muted.some((m) => s === m || s.startsWith(m + '.') || s.startsWith(m + '['))) return undefined;
    this.issues.push({ loc: this.locOf(path, atKey), path: s, message });
    return undefined;
  }

  /** A new entry (a VM, a step) begins: keys guessed in the previous one are no longer muted. */
  beginEntry(): void {
    this.muted = [];
  }

  /** Run `f` for its definitions only: the issues it finds are dropped (one is already reported). */
  quietly<T>(f: () => T): T {
    this.quiet++;
    try {
      return f();
    } finally {
      this.quiet--;
    }
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

  /**
   * The mapping `o` with only `allowed` keys: an unknown key is reported (with the allowed key it
   * most likely meant, which then carries its value), a missing required key is reported and
   * makes the result undefined.
   */
  fields(o: Obj, path: Path, what: string, allowed: readonly string[], required: readonly string[] = []): Obj | undefined {
    const { fields, missing } = this.fieldsOf(o, path, what, allowed, required);
    return missing.length === 0 ? fields : undefined;
  }

  /**
   * `fields` that also returns what it could read when required keys are missing. `mute`: issues
   * about a key read under a guessed name are muted for the rest of the entry (a list of VMs or
   * steps is not: their entries are checked on their own).
   */
  fieldsOf(o: Obj, path: Path, what: string, allowed: readonly string[], required: readonly string[], mute = true): { fields: Obj; missing: string[] } {
    const fields: Obj = {};
    for (const [k, v] of Object.entries(o)) if (allowed.includes(k)) fields[k] = v;
    for (const k of Object.keys(o)) {
      if (allowed.includes(k)) continue;
      const meant = closest(k, allowed.filter((a) => !(a in fields)));
      if (meant === undefined) {
        this.issue([...path, k], `unknown key '${k}' in ${where(path, what)} (allowed: ${allowed.join(', ')})`, true);
        continue;
      }
      this.issue([...path, k], `unknown key '${k}' in ${where(path, what)} (did you mean '${meant}'?)`, true);
      fields[meant] = o[k];
      if (mute) this.muted.push(formatPath([...path, meant]));
    }
    const missing = required.filter((k) => !(k in fields));
    for (const k of missing) this.issue(path, `${what} needs '${k}'`);
    return { fields, missing };
  }

  // --- names defined so far -------------------------------------------------------------------

  /** A VM entry defines its name; `spec` is undefined when the entry was rejected. */
  defineVm(name: string, spec: VmSpec | undefined): void {
    this.vms.set(name, spec);
  }

  hasVm(name: string): boolean {
    return this.vms.has(name);
  }

  /** A process step defines a live process; `vm` is undefined when its VM is not known. */
  startProcess(name: string, vm: VmSpec | undefined): void {
    this.procs.set(name, vm);
  }

  endProcess(name: string): void {
    this.procs.delete(name);
  }

  /** A live process of a known VM is named `process` (a rejected definition may be made again). */
  isLive(process: string): boolean {
    return this.procs.get(process) !== undefined;
  }

  useVar(name: string, path: Path): void {
    if (this.vars.has(name)) return;
    const meant = closest(name, this.vars);
    this.issue(path, `variable $${name} is not defined by an earlier step (${meant ? `did you mean $${meant}?` : "define it with 'as:' or 'save:'"})`);
  }

  defVar(o: Obj, key: string, path: Path): string | undefined {
    if (!(key in o)) return undefined;
    const name = this.take(parseVarDef(o[key], key), [...path, key]);
    if (name !== undefined) this.vars.add(name);
    return name;
  }

  // --- typed fields ---------------------------------------------------------------------------

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

  /** A VM defined above; with `kind`, it must have that vIOMMU. */
  vm(o: Obj, key: string, path: Path, kind?: 'vtd' | 'virtio'): VmSpec | undefined {
    const name = this.take(parseName(o[key], key), [...path, key]);
    if (name === undefined) return undefined;
    if (!this.vms.has(name)) {
      const meant = closest(name, this.vms.keys());
      return this.issue([...path, key], `no VM named '${name}' (${meant ? `did you mean '${meant}'?` : `VMs: ${[...this.vms.keys()].join(', ') || 'none'}`})`);
    }
    const vm = this.vms.get(name);
    if (!vm) return undefined;
    if (kind && vm.viommu !== kind) return this.issue([...path, key], `VM '${name}' has a ${vm.viommu === 'vtd' ? 'VT-d' : 'virtio-iommu'} vIOMMU; this action needs ${kind === 'vtd' ? 'VT-d' : 'virtio-iommu'}`);
    return vm;
  }

  /** A process live at this step, and its VM. */
  process(o: Obj, key: string, path: Path): { name: string; vm: VmSpec } | undefined {
    const name = this.take(parseName(o[key], key), [...path, key]);
    if (name === undefined) return undefined;
    if (!this.procs.has(name)) {
      const meant = closest(name, this.procs.keys());
      return this.issue([...path, key], `no live process named '${name}' at this step (${meant ? `did you mean '${meant}'?` : "create it with a 'process' step"})`);
    }
    const vm = this.procs.get(name);
    return vm ? { name, vm } : undefined;
  }

  /** A device of `vm` (any well-formed address when the VM is not known). */
  device(o: Obj, key: string, path: Path, vm: VmSpec | undefined): string | undefined {
    const bdf = this.take(parseBdf(o[key], key), [...path, key]);
    if (bdf === undefined || vm === undefined) return bdf;
    if (!vm.devices.some((d) => d.bdf === bdf)) return this.issue([...path, key], `VM '${vm.name}' has no device ${bdf} (devices: ${vm.devices.map((d) => d.bdf).join(', ')})`);
    return bdf;
  }

  bytes(v: unknown, path: Path, what: string): BytesSpec | undefined {
    const m = this.map(v, path, what);
    const o = m && this.fields(m, path, what, ['hex', 'text', 'pattern', 'random', 'length']);
    if (!o) return undefined;
    const forms = ['hex', 'text', 'pattern', 'random'].filter((k) => k in o);
    if (forms.length !== 1) return this.issue(path, `${what} needs exactly one of hex, text, pattern, random (found ${forms.join(', ') || 'none'})`);
    const form = forms[0]!;
    if (form === 'hex' || form === 'text') {
      if ('length' in o) return this.issue([...path, 'length'], `'length' goes with pattern and random; ${form} bytes are as long as the ${form}`);
      const s = this.take(parseString(String(o[form] ?? ''), form), [...path, form]);
      if (s === undefined) return undefined;
      if (form === 'text') return { text: s };
      const hex = s.replace(/\s+/g, '');
      if (!/^([0-9a-fA-F]{2})+$/.test(hex)) return this.issue([...path, form], `hex must be pairs of hex digits, not '${s}'`);
      return { hex };
    }
    if (!('length' in o)) return this.issue(path, `${what} needs 'length'`);
    const length = this.int(o, 'length', path, 1, MAX_DMA_LENGTH);
    const n = this.int(o, form, path, 0, form === 'pattern' ? 255 : 0xffff_ffff);
    if (length === undefined || n === undefined) return undefined;
    return form === 'pattern' ? { pattern: n, length } : { random: n, length };
  }

  /** A value, or `{ not: value }`. */
  matcher<T>(v: unknown, path: Path, parse: (x: unknown) => T | undefined): Matcher<T> | undefined {
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
      const o = this.fields(v as Obj, path, 'a matcher', ['not'], ['not']);
      if (!o) return undefined;
      const x = parse(o.not);
      return x === undefined ? undefined : { not: x };
    }
    const x = parse(v);
    return x === undefined ? undefined : { eq: x };
  }
}
