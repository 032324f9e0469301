/**
 * The object table of one iommufd context (drivers/iommu/iommufd/main.c): every object — IOAS,
 * HWPT (paging or nested), device, fault queue — has a 32-bit ID, allocated from 1 upwards
 * (xa_alloc with XA_FLAGS_ALLOC1), and a count of the objects that use it (`users`; the
 * kernel's obj->users minus its own reference).
 *
 * Lookup rules, as iommufd_get_object: an ID that does not exist, or names an object of
 * another kind than the one asked for, is ENOENT. A request whose ID may name several kinds
 * (a `pt_id`: IOAS or HWPT) gets the object with `any` and answers a kind it cannot use with
 * EINVAL (iommufd_hwpt_alloc, iommufd_device_change_pt). Destroying an object that is still
 * used is EBUSY (iommufd_object_remove); more than MAX_OBJECTS live objects is ENOSPC.
 */
import { fail } from '../../src/errors.js';

export type IommufdObjectKind = 'ioas' | 'hwpt-paging' | 'hwpt-nested' | 'device' | 'fault';

/** Live objects one context may hold (a cap on guest-controlled growth). */
export const MAX_OBJECTS = 4096;
/** Largest object ID (IDs are u32 on the wire, xa_limit_31b in the kernel). */
const MAX_ID = 0x7fff_ffff;

export interface IommufdObject {
  readonly id: number;
  readonly kind: IommufdObjectKind;
  /** Objects (or attachments) that use this one; DESTROY is EBUSY while it is above 0. */
  users: number;
}

export class ObjectTable {
  private readonly objects = new Map<number, IommufdObject>();
  private nextId = 1;

  constructor(private readonly max = MAX_OBJECTS) {}

  get size(): number {
    return this.objects.size;
  }

  /** An ID for a new object (not yet in the table). ENOSPC: the table is full. */
  reserveId(): number {
    if (this.objects.size >= this.max) fail('ENOSPC', `iommufd: ${this.max} objects exist (the cap)`);
    for (;;) {
      const id = this.nextId;
      this.nextId = id >= MAX_ID ? 1 : id + 1;
      if (!this.objects.has(id)) return id;
    }
  }

  add<T extends IommufdObject>(o: T): T {
    if (this.objects.has(o.id)) fail('EEXIST', `iommufd: object ${o.id} exists`);
    this.objects.set(o.id, o);
    return o;
  }

  /** The object `id` of kind `kind`. ENOENT: no such object, or another kind. */
  get<T extends IommufdObject>(id: number, kind: IommufdObjectKind, what: string): T {
    const o = this.objects.get(id);
    if (o === undefined || o.kind !== kind) fail('ENOENT', `${what}: no ${kind} with ID ${id}`);
    return o as T;
  }

  /** The object `id`, whatever its kind. ENOENT. */
  any(id: number, what: string): IommufdObject {
    const o = this.objects.get(id);
    if (o === undefined) fail('ENOENT', `${what}: no object with ID ${id}`);
    return o;
  }

  /** Remove `o` from the table. EBUSY: it still has users. */
  remove(o: IommufdObject, what: string): void {
    if (o.users > 0) fail('EBUSY', `${what}: ${o.kind} ${o.id} is used by ${o.users} object(s) or attachment(s)`);
    this.objects.delete(o.id);
  }

  /** Drop `o` whatever its users (teardown). */
  forget(o: IommufdObject): void {
    this.objects.delete(o.id);
  }

  values(): IterableIterator<IommufdObject> {
    return this.objects.values();
  }

  ofKind<T extends IommufdObject>(kind: IommufdObjectKind): T[] {
    return [...this.objects.values()].filter((o) => o.kind === kind) as T[];
  }
}
