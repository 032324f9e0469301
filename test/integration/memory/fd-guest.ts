/**
 * A minimal front-end for the shared-memory tests: handshake, VM_SETUP, then whatever
 * SET_MEM_TABLE the test sends — fd form with descriptors of its choice.
 */
import { FrontendClient } from '../../../vhost/roles/frontend.js';
import { DeviceKind, DeviceCap } from '../../../vhost/messages/device.js';
import type { MemoryRegion } from '../../../vhost/messages/handshake.js';

export const PF = 0x18; // 00:03.0

export async function connectVm(socket: string, name: string): Promise<FrontendClient> {
  const fe = await FrontendClient.connect({ path: socket });
  await fe.handshake();
  await fe.setupVm({ name, pasid_quota: 8, flags: 1, session_token: new Uint8Array(16) });
  return fe;
}

export function region(gpa: bigint, size: bigint, mmapOffset = 0n, path = ''): MemoryRegion {
  return { guest_phys_addr: gpa, memory_size: size, userspace_addr: 0n, mmap_offset: mmapOffset, path };
}

/** SET_MEM_TABLE fd form, then a PF device and all of `size` DMA-mapped at IOVA = GPA in domain 0. */
export async function announce(fe: FrontendClient, fd: number, size: number): Promise<void> {
  await fe.call('SET_MEM_TABLE', { regions: [region(0n, BigInt(size))], fds: [fd] });
  await fe.call('DEVICE_ADD', { rid: PF, kind: DeviceKind.PF, pasid_width: 20, caps: DeviceCap.PASID });
  await fe.call('DMA_MAP', { domain: 0, flags: 3, iova: 0n, gpa: 0n, size: BigInt(size) });
}

export async function errnoOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'ok';
  } catch (e) {
    return (e as { code?: string }).code ?? String(e);
  }
}
