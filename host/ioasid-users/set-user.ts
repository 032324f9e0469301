/**
 * The common shape of the host's per-VM IOASID users that follow a VM's set through its notifier
 * chain — KVM (priority CPU) and the VDCM (priority DEVICE), the users besides the IOMMU in
 * "IOASID Extensions for SIOV" (Jacob Pan, Yi L. Liu, LPC 2020): each VM's user registers on the
 * VM's set when it is created and, at teardown, releases what it holds and leaves the chain; the
 * host-wide object creates and destroys one per VM.
 */
import type { IoasidCore, IoasidNotifier, IoasidNotifyArgs, IoasidSet } from '../ioasid/index.js';

/** One VM's user: on the set's notifier chain from construction until `detach`. */
export abstract class SetUser {
  private readonly notifier: IoasidNotifier;
  private detached = false;

  constructor(
    protected readonly core: IoasidCore,
    readonly set: IoasidSet,
    readonly vmName: string,
    priority: NonNullable<IoasidNotifier['priority']>,
  ) {
    this.notifier = { priority, call: (a) => this.onEvent(a) };
    core.registerNotifier(set, this.notifier);
  }

  /** Release every reference the user holds and leave the set's chain (VM teardown). Idempotent. */
  detach(): void {
    if (this.detached) return;
    this.detached = true;
    this.releaseAll();
    if (this.core.isSetValid(this.set)) this.core.unregisterNotifier(this.set, this.notifier);
  }

  /** An event of the set (ALLOC, FREE, BIND, UNBIND). */
  protected abstract onEvent(a: IoasidNotifyArgs): void;

  /** Drop everything held (called once, by detach). */
  protected abstract releaseAll(): void;
}

/** The host-wide side of a user: one `V` per VM. */
export class SetUsers<V extends SetUser> {
  private readonly vms = new Set<V>();

  constructor(private readonly create: (set: IoasidSet, vmName: string) => V) {}

  /** Start serving a VM whose PASIDs live in `set`. */
  createVm(set: IoasidSet, vmName: string): V {
    const vm = this.create(set, vmName);
    this.vms.add(vm);
    return vm;
  }

  destroyVm(vm: V): void {
    vm.detach();
    this.vms.delete(vm);
  }
}
