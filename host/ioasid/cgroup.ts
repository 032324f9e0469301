/**
 * A hierarchical, cgroup-like limit tree for IOASIDs (the "ioasids" controller of Jacob Pan's
 * RFC "cgroup: Introduce ioasids controller", 2021, part of his IOASID series: files
 * `ioasids.max`, `ioasids.current`, `ioasids.events`).
 *
 * Contract:
 * - The root has no limit (`max` is not settable on the root, like CFTYPE_NOT_ON_ROOT) and its
 *   `current` counts every charged ID in the tree.
 * - A new child starts at max 0: nothing can be charged to it until its limit is raised.
 * - A charge of one ID to a node succeeds only if every node from it up to the root stays
 *   within its max; otherwise nothing is charged, the `events.max` counter of the node whose
 *   limit was hit goes up, and the charge fails with EAGAIN (the errno `ioasids_try_charge`
 *   returns in the controller's code; the RFC's text names no errno).
 * - Limits are checked against the core's capacity: a max above the capacity total is ENOSPC.
 *   Lowering max below current is allowed (current > max may also result from moving work,
 *   as the RFC notes); it only refuses further charges.
 */
import { fail } from '../../src/errors.js';
import type { IoasidCgroupSnapshot } from './types.js';

export class IoasidCgroup {
  /** @internal */ maxValue: number;
  /** @internal */ currentValue = 0;
  /** @internal */ eventsMax = 0;
  /** @internal */ readonly children = new Map<string, IoasidCgroup>();
  /** @internal Sets charging to this node. */ sets = 0;
  /** @internal */ removed = false;

  /** @internal Only IoasidCgroupTree creates nodes. */
  constructor(
    readonly name: string,
    readonly parent: IoasidCgroup | null,
    /** @internal */ readonly tree: IoasidCgroupTree,
  ) {
    this.maxValue = parent === null ? Infinity : 0;
  }

  get path(): string {
    if (this.parent === null) return '/';
    const up = this.parent.path;
    return up === '/' ? `/${this.name}` : `${up}/${this.name}`;
  }

  /** `ioasids.max`; 'max' when unlimited. */
  get max(): number | 'max' {
    return this.maxValue === Infinity ? 'max' : this.maxValue;
  }

  /** `ioasids.current`. */
  get current(): number {
    return this.currentValue;
  }

  /** `ioasids.events`. */
  get events(): { max: number } {
    return { max: this.eventsMax };
  }
}

export class IoasidCgroupTree {
  readonly root: IoasidCgroup;

  /** `capacityTotal` reports the core's capacity, which every limit is checked against. */
  constructor(private readonly capacityTotal: () => number) {
    this.root = new IoasidCgroup('', null, this);
  }

  /** Create a child of `parent` (max 0). EINVAL: bad name or dead parent; EEXIST: name taken. */
  create(parent: IoasidCgroup, name: string): IoasidCgroup {
    this.check(parent);
    if (typeof name !== 'string' || name.length === 0 || name.includes('/')) fail('EINVAL', `cgroup name '${String(name)}' must be a non-empty string without '/'`);
    if (parent.children.has(name)) fail('EEXIST', `cgroup ${parent.path} already has a child '${name}'`);
    const node = new IoasidCgroup(name, parent, this);
    parent.children.set(name, node);
    return node;
  }

  /**
   * Write `ioasids.max`. EINVAL: root, dead node, or not a non-negative integer / 'max';
   * ENOSPC: above the capacity total.
   */
  setMax(node: IoasidCgroup, max: number | 'max'): void {
    this.check(node);
    if (node.parent === null) fail('EINVAL', 'the root cgroup has no ioasids.max');
    if (max === 'max') {
      node.maxValue = Infinity;
      return;
    }
    if (!Number.isSafeInteger(max) || max < 0) fail('EINVAL', `cgroup limit ${String(max)} is not a non-negative integer or 'max'`);
    const total = this.capacityTotal();
    if (max > total) fail('ENOSPC', `cgroup ${node.path} limit ${max} exceeds the IOASID capacity ${total}`);
    node.maxValue = max;
  }

  /** Remove a leaf. EINVAL: root or dead; EBUSY: has children, charged IDs, or sets. */
  remove(node: IoasidCgroup): void {
    this.check(node);
    if (node.parent === null) fail('EINVAL', 'the root cgroup cannot be removed');
    if (node.children.size > 0) fail('EBUSY', `cgroup ${node.path} has children`);
    if (node.currentValue > 0 || node.sets > 0) fail('EBUSY', `cgroup ${node.path} still has ${node.currentValue} IDs charged and ${node.sets} sets`);
    node.parent.children.delete(node.name);
    node.removed = true;
  }

  /** EINVAL unless `node` is a live node of this tree. */
  check(node: IoasidCgroup): void {
    if (!(node instanceof IoasidCgroup) || node.tree !== this || node.removed) fail('EINVAL', 'not a live cgroup of this IOASID core');
  }

  /** Charge one ID to `node` and its ancestors, or fail with EAGAIN and charge nothing. */
  tryCharge(node: IoasidCgroup): void {
    for (let n: IoasidCgroup | null = node; n !== null; n = n.parent) {
      if (n.currentValue + 1 > n.maxValue) {
        n.eventsMax++;
        fail('EAGAIN', `cgroup ${n.path} is at its limit of ${n.maxValue} IOASIDs`);
      }
    }
    for (let n: IoasidCgroup | null = node; n !== null; n = n.parent) n.currentValue++;
  }

  uncharge(node: IoasidCgroup): void {
    for (let n: IoasidCgroup | null = node; n !== null; n = n.parent) n.currentValue--;
  }

  /** Every node, depth first, children in creation order. */
  snapshot(): IoasidCgroupSnapshot[] {
    const out: IoasidCgroupSnapshot[] = [];
    const walk = (n: IoasidCgroup): void => {
      out.push({ path: n.path, max: n.max, current: n.currentValue, events: { max: n.eventsMax } });
      for (const c of n.children.values()) walk(c);
    };
    walk(this.root);
    return out;
  }
}
