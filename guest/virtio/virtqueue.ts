/**
 * Split virtqueues in guest RAM (virtio 1.x §2.7): descriptor table, available ring (driver
 * area) and used ring (device area), with chained and indirect descriptors.
 *
 * The device side never trusts the ring. Every index, address, length and chain is checked
 * before it is used; anything malformed — an avail index that jumps by more than the queue
 * size, a head or next index out of range, a descriptor loop, a buffer outside guest RAM, a
 * length that overflows, a readable descriptor after a writable one, an indirect table where
 * none is allowed, a chain longer than the limits below — throws a RingError, which the
 * transport turns into DEVICE_NEEDS_RESET (§2.1.2). Nothing is consumed from a ring on error.
 */
import type { GuestRam } from '../memory/guest-ram.js';

export const VIRTQ_DESC_F_NEXT = 1;
export const VIRTQ_DESC_F_WRITE = 2;
export const VIRTQ_DESC_F_INDIRECT = 4;
export const VIRTQ_DESC_SIZE = 16;
/** Largest indirect table this device walks (entries). */
export const MAX_INDIRECT_ENTRIES = 1024;
/** Largest total buffer size of one chain, readable plus writable. */
export const MAX_CHAIN_BYTES = 1 << 20;

/** A malformed ring or descriptor chain (the device must then ask for a reset). */
export class RingError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RingError';
  }
}

export interface QueueLayout {
  /** Queue size (power of two). */
  num: number;
  desc: number;
  driver: number;
  device: number;
}

export interface Segment {
  gpa: number;
  len: number;
}

/** One available buffer: its head index and its device-readable and device-writable parts. */
export interface DescChain {
  head: number;
  readable: Segment[];
  writable: Segment[];
  readableLen: number;
  writableLen: number;
}

export function ringSizes(num: number): { desc: number; driver: number; device: number } {
  return { desc: VIRTQ_DESC_SIZE * num, driver: 6 + 2 * num, device: 6 + 8 * num };
}

/**
 * Check a queue layout against §2.7 (size a power of two up to `max`, area alignment 16/2/4)
 * and guest RAM; returns an error message or null.
 */
export function checkLayout(l: QueueLayout, max: number, ramSize: number): string | null {
  if (l.num < 1 || l.num > max || (l.num & (l.num - 1)) !== 0) return `queue size ${l.num} is not a power of two in 1..${max}`;
  if (l.desc % 16 !== 0) return `descriptor table 0x${l.desc.toString(16)} is not 16-byte aligned`;
  if (l.driver % 2 !== 0) return `driver area 0x${l.driver.toString(16)} is not 2-byte aligned`;
  if (l.device % 4 !== 0) return `device area 0x${l.device.toString(16)} is not 4-byte aligned`;
  const s = ringSizes(l.num);
  for (const [what, at, size] of [['descriptor table', l.desc, s.desc], ['driver area', l.driver, s.driver], ['device area', l.device, s.device]] as const) {
    if (!Number.isSafeInteger(at) || at + size > ramSize) return `${what} 0x${at.toString(16)}+${size} is outside guest RAM`;
  }
  return null;
}

export class SplitVirtqueue {
  /** Next available-ring slot the device will look at (free-running u16). */
  lastAvail = 0;
  /** The used index the device publishes next (free-running u16). */
  usedIdx = 0;

  constructor(
    private readonly ram: GuestRam,
    readonly layout: QueueLayout,
    private readonly indirect: boolean,
  ) {}

  private u16(gpa: number): number {
    const b = this.ram.read(gpa, 2);
    return b[0]! | (b[1]! << 8);
  }

  private putU16(gpa: number, v: number): void {
    this.ram.write(gpa, Uint8Array.of(v & 0xff, (v >> 8) & 0xff));
  }

  /** Buffers made available and not yet taken. */
  pending(): number {
    const idx = this.u16(this.layout.driver + 2);
    const n = (idx - this.lastAvail) & 0xffff;
    if (n > this.layout.num) throw new RingError(`avail idx ${idx} is ${n} entries ahead of the device (queue size ${this.layout.num})`);
    return n;
  }

  /** Take the next available chain, or null when there is none. */
  pop(): DescChain | null {
    if (this.pending() === 0) return null;
    const slot = this.lastAvail % this.layout.num;
    const head = this.u16(this.layout.driver + 4 + 2 * slot);
    const chain = this.walk(head);
    this.lastAvail = (this.lastAvail + 1) & 0xffff;
    return chain;
  }

  /** Return a chain to the driver with `len` bytes written into its writable part. */
  push(head: number, len: number): void {
    const slot = this.usedIdx % this.layout.num;
    const elem = this.layout.device + 4 + 8 * slot;
    this.ram.writeU32(elem, head);
    this.ram.writeU32(elem + 4, len >>> 0);
    this.usedIdx = (this.usedIdx + 1) & 0xffff;
    this.putU16(this.layout.device + 2, this.usedIdx);
  }

  /** The readable part of a chain, gathered into one buffer. */
  gather(chain: DescChain): Uint8Array {
    const out = new Uint8Array(chain.readableLen);
    let off = 0;
    for (const s of chain.readable) {
      this.ram.readInto(s.gpa, out.subarray(off, off + s.len));
      off += s.len;
    }
    return out;
  }

  /** Scatter `data` into the writable part of a chain starting at byte `at` of that part. */
  scatter(chain: DescChain, at: number, data: Uint8Array): void {
    if (at + data.length > chain.writableLen) throw new RingError(`write of ${data.length} bytes at ${at} exceeds ${chain.writableLen} writable bytes`);
    let pos = 0;
    let src = 0;
    for (const s of chain.writable) {
      const segEnd = pos + s.len;
      if (segEnd > at + src && src < data.length) {
        const from = at + src - pos;
        const n = Math.min(s.len - from, data.length - src);
        this.ram.write(s.gpa + from, data.subarray(src, src + n));
        src += n;
      }
      pos = segEnd;
      if (src >= data.length) break;
    }
  }

  private walk(head: number): DescChain {
    const num = this.layout.num;
    if (head >= num) throw new RingError(`avail ring names head ${head}, queue size is ${num}`);
    const chain: DescChain = { head, readable: [], writable: [], readableLen: 0, writableLen: 0 };
    let i = head;
    let seen = 0;
    for (;;) {
      if (++seen > num) throw new RingError(`descriptor chain from head ${head} is longer than the queue (loop?)`);
      const d = this.readDesc(this.layout.desc + VIRTQ_DESC_SIZE * i);
      if (d.flags & VIRTQ_DESC_F_INDIRECT) {
        if (!this.indirect) throw new RingError(`descriptor ${i} is INDIRECT but VIRTIO_F_INDIRECT_DESC was not negotiated`);
        if (d.flags & VIRTQ_DESC_F_NEXT) throw new RingError(`descriptor ${i} sets both INDIRECT and NEXT`);
        this.walkIndirect(d.addr, d.len, chain);
        return chain;
      }
      this.addSegment(chain, d.addr, d.len, (d.flags & VIRTQ_DESC_F_WRITE) !== 0, `descriptor ${i}`);
      if (!(d.flags & VIRTQ_DESC_F_NEXT)) return chain;
      if (d.next >= num) throw new RingError(`descriptor ${i} chains to ${d.next}, queue size is ${num}`);
      i = d.next;
    }
  }

  private walkIndirect(addr: bigint, len: number, chain: DescChain): void {
    if (len === 0 || len % VIRTQ_DESC_SIZE !== 0) throw new RingError(`indirect table length ${len} is not a non-zero multiple of 16`);
    const entries = len / VIRTQ_DESC_SIZE;
    if (entries > MAX_INDIRECT_ENTRIES) throw new RingError(`indirect table has ${entries} entries, more than ${MAX_INDIRECT_ENTRIES}`);
    const base = this.inRam(addr, len, 'indirect table');
    let i = 0;
    let seen = 0;
    for (;;) {
      if (++seen > entries) throw new RingError('indirect descriptor chain loops');
      const d = this.readDesc(base + VIRTQ_DESC_SIZE * i);
      if (d.flags & VIRTQ_DESC_F_INDIRECT) throw new RingError(`indirect descriptor ${i} sets INDIRECT`);
      this.addSegment(chain, d.addr, d.len, (d.flags & VIRTQ_DESC_F_WRITE) !== 0, `indirect descriptor ${i}`);
      if (!(d.flags & VIRTQ_DESC_F_NEXT)) return;
      if (d.next >= entries) throw new RingError(`indirect descriptor ${i} chains to ${d.next}, table has ${entries}`);
      i = d.next;
    }
  }

  private addSegment(chain: DescChain, addr: bigint, len: number, writable: boolean, what: string): void {
    const gpa = this.inRam(addr, len, what);
    if (chain.readableLen + chain.writableLen + len > MAX_CHAIN_BYTES) throw new RingError(`descriptor chain from head ${chain.head} exceeds ${MAX_CHAIN_BYTES} bytes`);
    if (writable) {
      chain.writable.push({ gpa, len });
      chain.writableLen += len;
    } else {
      if (chain.writable.length > 0) throw new RingError(`${what} is device-readable after a device-writable descriptor`);
      chain.readable.push({ gpa, len });
      chain.readableLen += len;
    }
  }

  private inRam(addr: bigint, len: number, what: string): number {
    const end = addr + BigInt(len);
    if (end > BigInt(this.ram.size)) throw new RingError(`${what}: buffer 0x${addr.toString(16)}+${len} is outside guest RAM`);
    return Number(addr);
  }

  private readDesc(gpa: number): { addr: bigint; len: number; flags: number; next: number } {
    const b = this.ram.read(gpa, VIRTQ_DESC_SIZE);
    const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
    return { addr: v.getBigUint64(0, true), len: v.getUint32(8, true), flags: v.getUint16(12, true), next: v.getUint16(14, true) };
  }
}
