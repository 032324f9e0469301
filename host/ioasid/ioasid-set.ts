/**
 * An IOASID set handle (V4 `struct ioasid_set`): what setAlloc() returns and every set-scoped
 * call takes. The handle is immutable; the set's mutable state (quota, members, SPIDs, notifier
 * chain) lives inside the core that created it, so a handle can neither be forged nor used on
 * another core (both are EINVAL, like a set that is not in `ioasid_sets`).
 */
import type { IoasidSetType, IoasidToken } from './types.js';

export class IoasidSet {
  /** @internal Only IoasidCore constructs sets. */
  constructor(
    /** Index of the set in the core (like `set->id`), unique for the core's lifetime. */
    readonly id: number,
    readonly type: IoasidSetType,
    /** The MM token; null for NULL sets. */
    readonly token: IoasidToken | null,
    /** Optional label (e.g. the VM name) shown in snapshots and trace events. */
    readonly name: string | null,
    /** @internal The core that owns the set. */
    readonly owner: object,
  ) {}

  toString(): string {
    return `ioasid set ${this.id}${this.name ? ` (${this.name})` : ''}`;
  }
}
