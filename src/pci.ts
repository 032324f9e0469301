/**
 * PCI requester IDs. A BDF string 'bb:dd.f' (hex bus, hex device 0–1f, function 0–7) names a
 * device; its requester ID is bus << 8 | device << 3 | function (PCIe; also the virtio-iommu
 * endpoint ID under ACPI VIOT's default mapping, docs/design.md §3.2).
 */
import { fail } from './errors.js';

const BDF_RE = /^(?:([0-9a-fA-F]{4}):)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])$/;

export function parseBdf(bdf: string): number {
  const m = BDF_RE.exec(bdf);
  if (!m) fail('EINVAL', `'${bdf}' is not a PCI address of the form bb:dd.f`);
  if (m[1] !== undefined && parseInt(m[1], 16) !== 0) fail('EINVAL', `'${bdf}': only PCI segment 0000 exists`);
  const bus = parseInt(m[2]!, 16);
  const dev = parseInt(m[3]!, 16);
  const fn = parseInt(m[4]!, 10);
  if (dev > 0x1f) fail('EINVAL', `'${bdf}': device number ${dev} is above 0x1f`);
  return (bus << 8) | (dev << 3) | fn;
}

export function formatBdf(rid: number): string {
  if (!Number.isInteger(rid) || rid < 0 || rid > 0xffff) fail('EINVAL', `requester ID ${rid} is not a 16-bit value`);
  const h = (n: number, w: number) => n.toString(16).padStart(w, '0');
  return `${h(rid >> 8, 2)}:${h((rid >> 3) & 0x1f, 2)}.${rid & 7}`;
}
