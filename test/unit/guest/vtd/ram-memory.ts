/** A GuestMemory over an in-process GuestRam, for tests of guest-side code without a host. */
import { GuestRam } from '../../../../guest/memory/guest-ram.js';
import type { GuestMemory } from '../../../../guest/driver/guest-memory.js';

export function ramMemory(size = 16 * 1024 * 1024): { ram: GuestRam; mem: GuestMemory } {
  const ram = GuestRam.create(size, { backing: 'inproc' });
  const mem: GuestMemory = {
    memread: async (gpa, length) => ram.read(Number(gpa), length),
    memwrite: async (gpa, data) => ram.write(Number(gpa), data),
  };
  return { ram, mem };
}
