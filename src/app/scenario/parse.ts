/**
 * Scenario files → validated `Scenario` (schema.ts), or the list of everything wrong with them,
 * each issue at its file:line:col and path (e.g. `steps[3].bind.device`).
 *
 * YAML and JSON both go through the `yaml` package (JSON is a subset of YAML 1.2), which keeps
 * source ranges for every node, so an issue points at the offending value, not just the file.
 * Integers are parsed as bigint so that 64-bit addresses keep every bit.
 *
 * This file reads the document: the top level, the VMs, and each step's action key, label and
 * expected error; the step's arguments are read by its action's record (steps.ts), the fields by
 * the Checker (checker.ts). Checks are static and complete: unknown keys, missing keys, types and
 * ranges, names of VMs, processes and devices that must exist (at that point of the step list),
 * `$VAR` references that must have been defined by an earlier step, and actions that the VM's
 * vIOMMU kind does not have. Every issue is collected rather than stopping at the first, but one
 * mistake is reported once: a misspelled key or action is named with what it most likely meant,
 * and what it defines still counts for the steps after it.
 */
import { readFileSync } from 'node:fs';
import { LineCounter, parseDocument } from 'yaml';
import { VsvaError } from '../../errors.js';
import { PASID_BITS, PASID_MAX } from '../../vtd/pasid-entry.js';
import { Checker, type Obj, type Path, type ScenarioIssue } from './checker.js';
import type { Scenario } from './schema.js';
import { argKeys, type StepDef } from './step-def.js';
import { STEP_OPS, stepDef, type Step } from './steps.js';
import { closest } from './suggest.js';
import { PAGE_REQUEST_POLICIES, VIRTIO_STATUS_NAMES, type ExpectedError, type StepBase, type VmSpec } from './types.js';
import { parseBdf, parseEnum, parseErrno, parseName, parseSize, parseString } from './values.js';

export { formatIssues, formatPath, type ScenarioIssue } from './checker.js';

export type ParseResult = { ok: true; scenario: Scenario } | { ok: false; issues: ScenarioIssue[] };

/** Guest RAM bounds: enough for tables and buffers, small enough for a test machine. */
const MIN_MEMORY = 1 << 20;
const MAX_MEMORY = 4 * 1024 ** 3;
const DEFAULT_MEMORY = 64 * 1024 * 1024;
const DEFAULT_PASID_QUOTA = 1024;
const DEFAULT_STEP_TIMEOUT_S = 10;
const DEFAULT_DEVICES: VmSpec['devices'] = [{ bdf: '00:03.0', kind: 'pf' }];

/**
 * Read and parse a scenario file. A file that cannot be read is not a malformed scenario: it is a
 * VsvaError, ENOENT when there is no such file, EIO otherwise (a directory, no permission).
 */
export function loadScenario(file: string): ParseResult {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') throw new VsvaError('ENOENT', `no such file: ${file}`, { file });
    throw new VsvaError('EIO', `cannot read ${file}: ${(e as Error).message}`, { file });
  }
  return parseScenario(text, file);
}

export function parseScenario(text: string, file: string): ParseResult {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, intAsBigInt: true, uniqueKeys: true, prettyErrors: false });
  if (doc.errors.length > 0) {
    return {
      ok: false,
      issues: doc.errors.map((e) => {
        const p = lc.linePos(e.pos[0]);
        return { loc: { file, line: p.line, col: p.col }, path: '', message: `syntax: ${e.message.split('\n')[0]!.trim()}` };
      }),
    };
  }
  const c = new Checker(doc, lc, file);
  const scenario = parseRoot(c, doc.toJS({ maxAliasCount: 100 }) as unknown, file);
  if (c.issues.length > 0 || scenario === undefined) return { ok: false, issues: c.issues };
  return { ok: true, scenario };
}

function parseRoot(c: Checker, raw: unknown, file: string): Scenario | undefined {
  const o0 = c.map(raw, [], 'a scenario');
  if (!o0) return undefined;
  const { fields: o } = c.fieldsOf(o0, [], 'the scenario', ['name', 'description', 'host', 'timeout', 'vms', 'steps'], ['name', 'vms', 'steps'], false);
  const name = 'name' in o ? c.take(parseString(o.name, 'name'), ['name']) : undefined;
  const description = 'description' in o ? c.take(parseString(o.description, 'description'), ['description']) : undefined;
  let pasidBits = PASID_BITS;
  let spawn = false;
  if ('host' in o) {
    const m = c.map(o.host, ['host'], 'host');
    const h = m && c.fieldsOf(m, ['host'], 'host', ['pasidBits', 'spawn'], [], false).fields;
    if (h) {
      pasidBits = c.int(h, 'pasidBits', ['host'], 1, PASID_BITS, PASID_BITS) ?? PASID_BITS;
      spawn = c.bool(h, 'spawn', ['host'], false);
    }
  }
  const timeoutS = c.int(o, 'timeout', [], 1, 3600, DEFAULT_STEP_TIMEOUT_S) ?? DEFAULT_STEP_TIMEOUT_S;
  const vms: VmSpec[] = [];
  const vmsRaw = 'vms' in o ? c.list(o.vms, ['vms'], 'vms') : undefined;
  if (vmsRaw) {
    if (vmsRaw.length === 0) c.issue(['vms'], 'a scenario needs at least one VM');
    vmsRaw.forEach((v, i) => {
      const vm = parseVm(c, v, ['vms', i]);
      if (vm) vms.push(vm);
    });
  }
  const steps: Step[] = [];
  const stepsRaw = 'steps' in o ? c.list(o.steps, ['steps'], 'steps') : undefined;
  if (stepsRaw) {
    if (stepsRaw.length === 0) c.issue(['steps'], 'a scenario needs at least one step');
    stepsRaw.forEach((s, i) => {
      const step = parseStep(c, s, i);
      if (step) steps.push(step);
    });
  }
  if (name === undefined || c.issues.length > 0) return undefined;
  const sc: Scenario = { name, file, host: { pasidBits, spawn }, stepTimeoutMs: timeoutS * 1000, vms, steps };
  if (description !== undefined) sc.description = description;
  return sc;
}

// --- VMs ----------------------------------------------------------------------------------------

function parseVm(c: Checker, raw: unknown, path: Path): VmSpec | undefined {
  c.beginEntry();
  const m = c.map(raw, path, 'a VM');
  if (!m) return undefined;
  const { fields: o } = c.fieldsOf(m, path, 'a VM', ['name', 'viommu', 'memory', 'pasidQuota', 'vcmd', 'uapi', 'devices', 'pageRequests'], ['name', 'viommu']);
  const name = 'name' in o ? c.take(parseName(o.name, 'name'), [...path, 'name']) : undefined;
  if (name !== undefined && c.hasVm(name)) c.issue([...path, 'name'], `two VMs are named '${name}'`);
  const viommu = 'viommu' in o ? c.take(parseEnum(o.viommu, ['vtd', 'virtio'] as const, 'viommu'), [...path, 'viommu']) : undefined;
  let memory = DEFAULT_MEMORY;
  if ('memory' in o) {
    const n = c.take(parseSize(o.memory, 'memory'), [...path, 'memory']);
    if (n !== undefined) {
      if (n < MIN_MEMORY || n > MAX_MEMORY || n % 4096 !== 0) c.issue([...path, 'memory'], `memory must be a multiple of 4 KiB in 1M..4G, not ${n}`);
      else memory = n;
    }
  }
  const pasidQuota = c.int(o, 'pasidQuota', path, 0, PASID_MAX, DEFAULT_PASID_QUOTA) ?? DEFAULT_PASID_QUOTA;
  let vcmd: VmSpec['vcmd'] = '3.1';
  if ('vcmd' in o) {
    if (viommu === 'virtio') c.issue([...path, 'vcmd'], "'vcmd' applies to VT-d VMs only");
    else if (o.vcmd === false) vcmd = false;
    else {
      const s = typeof o.vcmd === 'number' ? o.vcmd.toFixed(1) : o.vcmd;
      vcmd = c.take(parseEnum(s, ['3.1', '3.3'] as const, 'vcmd'), [...path, 'vcmd']) ?? '3.1';
    }
  }
  const uapi = 'uapi' in o ? c.take(parseEnum(o.uapi, ['vfio-sva', 'iommufd'] as const, 'uapi'), [...path, 'uapi']) : undefined;
  const devices = 'devices' in o ? parseDevices(c, o.devices, [...path, 'devices']) : DEFAULT_DEVICES;
  const pageRequests = 'pageRequests' in o ? (c.take(parseEnum(o.pageRequests, PAGE_REQUEST_POLICIES, 'pageRequests'), [...path, 'pageRequests']) ?? 'serve') : 'serve';
  if (name === undefined) return undefined;
  if (viommu === undefined) {
    // Still a VM name: steps that use it are not reported again.
    c.defineVm(name, undefined);
    return undefined;
  }
  const vm: VmSpec = { name, viommu, memory, pasidQuota, vcmd: viommu === 'vtd' ? vcmd : false, ...(uapi !== undefined ? { uapi } : {}), devices, pageRequests, loc: c.locOf(path) };
  c.defineVm(name, vm);
  return vm;
}

function parseDevices(c: Checker, raw: unknown, path: Path): VmSpec['devices'] {
  const list = c.list(raw, path, 'devices');
  if (!list) return DEFAULT_DEVICES;
  if (list.length === 0) c.issue(path, 'a VM needs at least one device');
  const devices: VmSpec['devices'] = [];
  list.forEach((d, i) => {
    const dp = [...path, i];
    const m = c.map(d, dp, 'a device');
    const dm = m && c.fields(m, dp, 'a device', ['bdf', 'kind'], ['bdf']);
    if (!dm) return;
    const bdf = c.take(parseBdf(dm.bdf, 'bdf'), [...dp, 'bdf']);
    const kind = 'kind' in dm ? (c.take(parseEnum(dm.kind, ['pf', 'adi'] as const, 'kind'), [...dp, 'kind']) ?? 'pf') : 'pf';
    if (bdf === undefined) return;
    if (devices.some((x) => x.bdf === bdf)) c.issue([...dp, 'bdf'], `device ${bdf} is listed twice`);
    devices.push({ bdf, kind });
  });
  return devices;
}

// --- steps --------------------------------------------------------------------------------------

const quote = (k: string): string => `'${k}'`;

function parseStep(c: Checker, raw: unknown, index: number): Step | undefined {
  c.beginEntry();
  const path: Path = ['steps', index];
  const o = c.map(raw, path, 'a step');
  if (!o) return undefined;
  const keys = Object.keys(o);
  const n = index + 1;
  if (keys.length === 0) return c.issue(path, `step ${n} has no action (actions: ${STEP_OPS.join(', ')})`);
  if (keys.length > 1) {
    const actions = keys.filter((k) => stepDef(k));
    const def = actions.length === 1 ? stepDef(actions[0]!)! : undefined;
    const strays = keys.filter((k) => k !== def?.op);
    if (def && strays.every((k) => argKeys(def).includes(k))) {
      // `- alloc:` with its arguments on the next lines at the same indentation.
      c.issue(path, `step ${n} has one action, '${def.op}'; ${strays.map(quote).join(', ')} belong${strays.length === 1 ? 's' : ''} to it: indent ${strays.length === 1 ? 'it' : 'them'} under '${def.op}:'`);
      const args = o[def.op] ?? {};
      if (typeof args === 'object' && !Array.isArray(args)) c.quietly(() => stepBody(c, def, { ...args, ...Object.fromEntries(strays.map((k) => [k, o[k]])) }, index));
      return undefined;
    }
    const unknown = keys.filter((k) => !stepDef(k));
    return c.issue(path, `a step is a mapping with exactly one action (${STEP_OPS.join(', ')}); found ${keys.join(', ')}${unknown.length ? ` (unknown: ${unknown.join(', ')})` : ''}`);
  }
  const key = keys[0]!;
  const def = stepDef(key);
  if (def) return stepBody(c, def, o[key], index);
  const meant = closest(key, STEP_OPS);
  c.issue(path, `unknown action '${key}' in step ${n} (${meant ? `did you mean '${meant}'?` : `actions: ${STEP_OPS.join(', ')}`})`);
  // What the step defines still counts, so later steps are not reported for it.
  const args = o[key];
  if (meant) c.quietly(() => stepBody(c, stepDef(meant)!, args, index));
  else if (args !== null && typeof args === 'object' && 'as' in args) c.quietly(() => c.defVar(args as Obj, 'as', path));
  return undefined;
}

/** A step of action `def`: common keys here, its own keys by its record. */
function stepBody(c: Checker, def: StepDef<Step>, raw: unknown, index: number): Step | undefined {
  const path: Path = ['steps', index];
  const ap: Path = [...path, def.op];
  const before = c.issues.length;
  const m = c.map(def.shorthand?.(raw) ?? raw ?? {}, ap, `'${def.op}' arguments`);
  if (!m) return undefined;
  const { fields: a, missing } = c.fieldsOf(m, ap, `'${def.op}'`, argKeys(def), def.args.required);
  const head: StepBase = { index, loc: c.locOf(path) };
  if ('label' in a) head.label = c.take(parseString(a.label, 'label'), [...ap, 'label']);
  if ('error' in a) head.error = expectedError(c, a.error, [...ap, 'error']);
  if (missing.length > 0) {
    // Reported above; read the rest only for what the step defines.
    c.quietly(() => def.parse(a, ap, head, c));
    return undefined;
  }
  const step = def.parse(a, ap, head, c);
  return c.issues.length === before ? step : undefined;
}

function expectedError(c: Checker, v: unknown, path: Path): ExpectedError | undefined {
  if (typeof v === 'string') {
    if ((VIRTIO_STATUS_NAMES as readonly string[]).includes(v)) return { status: v as ExpectedError['status'] };
    const errno = c.take(parseErrno(v, 'error'), path);
    return errno ? { errno } : undefined;
  }
  const m = c.map(v, path, 'error');
  const o = m && c.fields(m, path, 'error', ['errno', 'status', 'message']);
  if (!o) return undefined;
  const e: ExpectedError = {};
  if ('errno' in o) e.errno = c.take(parseErrno(o.errno, 'errno'), [...path, 'errno']);
  if ('status' in o) e.status = c.take(parseEnum(o.status, VIRTIO_STATUS_NAMES, 'status'), [...path, 'status']);
  if ('message' in o) e.message = c.take(parseString(o.message, 'message'), [...path, 'message']);
  if (Object.keys(o).length === 0) c.issue(path, 'error needs errno, status or message');
  return e;
}
