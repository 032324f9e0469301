/**
 * DEVICE_DMA with STAGED data (docs/protocol.md §10.8, "Staged data"): the bytes do not travel in
 * the message but lie in guest memory the host maps (the VMM's DMA staging area, a region of the
 * memory table). A WRITE's data is taken from there — a view of the mapping, no copy when guest
 * RAM is mapped; a READ's data is stored there and the reply carries only its length. The device
 * itself still reads or writes `addr` through translation (host/devices/dma-device.ts).
 *
 * staging_gpa + length must lie inside one memory-table region (EFAULT otherwise), checked
 * before the device does anything.
 */
import {
  DeviceDmaOp, DeviceDmaStatus, DEVICE_DMA_RESULT_STAGED, type DeviceDmaReply, type DeviceDmaRequest,
} from '../../vhost/messages/device-dma.js';
import type { HostMemory } from '../memory/host-memory.js';
import type { MemTableMap } from '../vfio/mem-table.js';

/** What performs the DMA: the VM (host/server/vm.ts deviceDma), its device's reply or a promise of it. */
export interface StagedDmaTarget {
  deviceDma(r: DeviceDmaRequest, into?: Uint8Array): DeviceDmaReply | Promise<DeviceDmaReply>;
}

/** Host memory [hpa, hpa + length) as a view when its region is addressable here, else a copy. */
function hostView(mem: HostMemory, hpa: number, length: number): Uint8Array {
  const region = mem.regionFor(hpa, length);
  const off = hpa - region.hpa;
  const buf = region.backing.buffer;
  return buf !== undefined ? buf.subarray(off, off + length) : mem.read(hpa, length);
}

export function stagedDeviceDma(r: DeviceDmaRequest, table: MemTableMap, mem: HostMemory, target: StagedDmaTarget): DeviceDmaReply | Promise<DeviceDmaReply> {
  const hpa = table.gpaToHpa(r.staging_gpa ?? 0n, BigInt(r.length));
  if (r.op === DeviceDmaOp.WRITE) return target.deviceDma({ ...r, data: hostView(mem, hpa, r.length) });
  // A mapped staging area: the device reads straight into it (one copy, no intermediate buffer).
  const region = mem.regionFor(hpa, r.length);
  const buf = region.backing.buffer;
  const into = buf !== undefined ? buf.subarray(hpa - region.hpa, hpa - region.hpa + r.length) : undefined;
  const reply = target.deviceDma(r, into);
  // A promise only while the device waits for a page response (host/devices/dma-device.ts).
  return reply instanceof Promise ? reply.then((x) => storeRead(x, mem, hpa, into)) : storeRead(reply, mem, hpa, into);
}

/** A READ's reply: its bytes in the staging area (already, when read into `into`), the reply carrying their length. */
function storeRead(reply: DeviceDmaReply, mem: HostMemory, hpa: number, into: Uint8Array | undefined): DeviceDmaReply {
  if (reply.status !== DeviceDmaStatus.OK) return reply;
  const data = reply.data;
  const length = data?.length ?? 0;
  // Stored already when the device read into the staging view; else (positioned I/O, or a
  // device path that does not take `into`) copy it there now.
  const inPlace = data === undefined || (into !== undefined && data.buffer === into.buffer && data.byteOffset === into.byteOffset);
  if (!inPlace) mem.write(hpa, data);
  return { status: reply.status, reason: 0, flags: DEVICE_DMA_RESULT_STAGED, pasid: 0, fault_addr: 0n, staged_length: length };
}
