/**
 * Handshake messages, with vhost-user's codes and semantics (QEMU docs/interop/vhost-user.rst,
 * "Front-end message types" and "Protocol features"), and SET_MEM_TABLE in two forms
 * (docs/protocol.md, SET_MEM_TABLE):
 * - fd form, as vhost-user: one file descriptor per region as SCM_RIGHTS ancillary data on the
 *   message's first byte, in region order; the regions' path fields are ignored (send them empty);
 * - path form, for peers that cannot pass descriptors: no descriptors, every region names the
 *   file that backs it (e.g. under /dev/shm).
 * The receiver tells them apart by whether descriptors came with the message.
 */
import { fail } from '../../src/errors.js';
import { Struct, reserved } from '../wire/struct.js';
import { EMPTY, U64, checkNoWrap, message, type PayloadCodec } from './codec.js';

const VHOST_USER_GET_FEATURES = 1;
const VHOST_USER_SET_FEATURES = 2;
const VHOST_USER_SET_OWNER = 3;
const VHOST_USER_SET_MEM_TABLE = 5;
const VHOST_USER_GET_PROTOCOL_FEATURES = 15;
const VHOST_USER_SET_PROTOCOL_FEATURES = 16;

/** Regions per SET_MEM_TABLE (VHOST_MEMORY_BASELINE_NREGIONS, QEMU hw/virtio/vhost-user.c). */
export const VHOST_MEMORY_MAX_NREGIONS = 8;
/** Bytes of the NUL-padded path field of a region (at most 255 bytes of UTF-8 path). */
const VHOST_MEMORY_PATH_SIZE = 256;

export interface MemoryRegion {
  guest_phys_addr: bigint;
  memory_size: bigint;
  userspace_addr: bigint;
  mmap_offset: bigint;
  /** Path form: absolute path of the file that backs the region (e.g. under /dev/shm). Fd form: empty. */
  path: string;
}

export interface MemTable {
  regions: MemoryRegion[];
  /**
   * Fd form: one descriptor per region, in region order (sent as SCM_RIGHTS; received ones are
   * owned by the handler). Absent or empty: the path form.
   */
  fds?: number[];
}

export const MemoryRegionStruct = new Struct<MemoryRegion>('memory region', [
  { name: 'guest_phys_addr', type: 'u64', doc: 'guest physical address of the region' },
  { name: 'memory_size', type: 'u64', doc: 'size in bytes' },
  { name: 'userspace_addr', type: 'u64', doc: "front-end's virtual address of the region (informational)" },
  { name: 'mmap_offset', type: 'u64', doc: 'offset of the region in the file' },
  { name: 'path', type: { kind: 'cstr', size: VHOST_MEMORY_PATH_SIZE }, doc: 'path form: path of the backing file; fd form: empty (ignored)' },
]);

export const MemTableHeaderStruct = new Struct<{ nregions: number }>('SET_MEM_TABLE', [
  { name: 'nregions', type: 'u32', doc: `number of regions that follow (1–${VHOST_MEMORY_MAX_NREGIONS})` },
  reserved(4, 'padding'),
]);

/** Field checks; `pathForm`: the sender passes no descriptors, so every path must be set. */
function checkRegion(r: MemoryRegion, i: number, pathForm: boolean): void {
  if (r.memory_size === 0n) fail('EINVAL', `SET_MEM_TABLE region ${i}: memory_size is 0`);
  if (pathForm && r.path.length === 0) fail('EINVAL', `SET_MEM_TABLE region ${i}: path is empty and no file descriptor is sent`);
  checkNoWrap(`SET_MEM_TABLE region ${i} guest_phys_addr`, r.guest_phys_addr, r.memory_size);
  checkNoWrap(`SET_MEM_TABLE region ${i} userspace_addr`, r.userspace_addr, r.memory_size);
  checkNoWrap(`SET_MEM_TABLE region ${i} mmap_offset`, r.mmap_offset, r.memory_size);
}

/** nregions u32, padding u32, then nregions × 288-byte regions. */
const MemTableCodec: PayloadCodec<MemTable> = {
  sizeOf: (v) => MemTableHeaderStruct.size + v.regions.length * MemoryRegionStruct.size,
  encodeInto(buf, off, v) {
    const n = v.regions.length;
    if (n < 1 || n > VHOST_MEMORY_MAX_NREGIONS) fail('EINVAL', `SET_MEM_TABLE: ${n} regions, expected 1–${VHOST_MEMORY_MAX_NREGIONS}`);
    const nfds = v.fds?.length ?? 0;
    if (nfds !== 0 && nfds !== n) fail('EINVAL', `SET_MEM_TABLE: ${nfds} file descriptors for ${n} regions`);
    MemTableHeaderStruct.encodeInto(buf, off, { nregions: n });
    v.regions.forEach((r, i) => {
      checkRegion(r, i, nfds === 0);
      MemoryRegionStruct.encodeInto(buf, off + MemTableHeaderStruct.size + i * MemoryRegionStruct.size, r);
    });
  },
  decode(p) {
    if (p.length < MemTableHeaderStruct.size) fail('EINVAL', `SET_MEM_TABLE: payload is ${p.length} bytes, shorter than its 8-byte header`);
    const { nregions } = MemTableHeaderStruct.decode(p, 0);
    if (nregions < 1 || nregions > VHOST_MEMORY_MAX_NREGIONS) fail('EINVAL', `SET_MEM_TABLE: nregions ${nregions}, expected 1–${VHOST_MEMORY_MAX_NREGIONS}`);
    const want = MemTableHeaderStruct.size + nregions * MemoryRegionStruct.size;
    if (p.length !== want) fail('EINVAL', `SET_MEM_TABLE: payload is ${p.length} bytes, expected ${want} for ${nregions} regions`);
    const regions: MemoryRegion[] = [];
    for (let i = 0; i < nregions; i++) {
      const r = MemoryRegionStruct.decode(p, MemTableHeaderStruct.size + i * MemoryRegionStruct.size);
      // Whether descriptors came is known only after decoding: the host checks paths then.
      checkRegion(r, i, false);
      regions.push(r);
    }
    return { regions };
  },
};

export const GET_FEATURES = message<void, bigint>({
  name: 'GET_FEATURES', code: VHOST_USER_GET_FEATURES, replyKind: 'value', request: EMPTY, reply: U64, feature: 0n,
  doc: 'Device feature bits the back-end offers (bit 30 VHOST_USER_F_PROTOCOL_FEATURES).',
});
export const SET_FEATURES = message<bigint, void>({
  name: 'SET_FEATURES', code: VHOST_USER_SET_FEATURES, replyKind: 'ack', request: U64, reply: EMPTY, feature: 0n,
  doc: 'Device feature bits the front-end accepts; a subset of GET_FEATURES (else EOPNOTSUPP).',
});
export const SET_OWNER = message<void, void>({
  name: 'SET_OWNER', code: VHOST_USER_SET_OWNER, replyKind: 'ack', request: EMPTY, reply: EMPTY, feature: 0n,
  doc: 'Session start. A second SET_OWNER on the same connection is EBUSY.',
});
export const SET_MEM_TABLE = message<MemTable, void>({
  name: 'SET_MEM_TABLE', code: VHOST_USER_SET_MEM_TABLE, replyKind: 'ack', request: MemTableCodec, reply: EMPTY, feature: 0n, fds: true,
  doc: 'Guest RAM regions, each backed by a file passed as a descriptor (fd form) or named by path (path form); replaces the previous table.',
});
export const GET_PROTOCOL_FEATURES = message<void, bigint>({
  name: 'GET_PROTOCOL_FEATURES', code: VHOST_USER_GET_PROTOCOL_FEATURES, replyKind: 'value', request: EMPTY, reply: U64, feature: 0n,
  doc: 'Protocol feature bits the back-end offers.',
});
export const SET_PROTOCOL_FEATURES = message<bigint, void>({
  name: 'SET_PROTOCOL_FEATURES', code: VHOST_USER_SET_PROTOCOL_FEATURES, replyKind: 'ack', request: U64, reply: EMPTY, feature: 0n,
  doc: 'Protocol feature bits the front-end accepts (subset of GET_PROTOCOL_FEATURES; VSVA needs REPLY_ACK and BACKEND_REQ).',
});
