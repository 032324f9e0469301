/**
 * Choosing the host uAPI of a VM: startGuest's `uapi` option, the protocol feature an iommufd VM
 * requires of the back-end, and the VM_SETUP flag it sends (docs/protocol.md §13, §13.12).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { startGuest } from '../../../../src/app/harness/start-guest.js';
import { BackendServer, type Session } from '../../../../vhost/index.js';
import { ALL_PROTOCOL_FEATURES, ProtocolFeature } from '../../../../vhost/wire/features.js';
import { VM_SETUP_UAPI_IOMMUFD } from '../../../../vhost/messages/vm.js';

const open: { close(): unknown }[] = [];
afterEach(async () => {
  for (const o of open.splice(0).reverse()) await o.close();
});

/** A back-end that records VM_SETUP's flags and answers nothing else it does not need to. */
function backend(protocolFeatures: bigint) {
  const setups: number[] = [];
  const server = new BackendServer({
    protocolFeatures,
    handlers: (session: Session) => ({
      VM_SETUP: (r) => {
        setups.push(r.flags);
        return { vm_id: session.id, flags: 0, session_token: new Uint8Array(16).fill(1) };
      },
    }),
  });
  open.push(server);
  return { connect: server.memoryConnector(), setups };
}

describe("a VM's host uAPI", () => {
  it('startGuest refuses an unknown uAPI (EINVAL) before connecting', async () => {
    const b = backend(ALL_PROTOCOL_FEATURES);
    await expect(startGuest({ connect: b.connect, viommu: 'vtd', memory: 1 << 20, ramBacking: 'inproc', uapi: 'vfio' as 'iommufd' })).rejects.toMatchObject({ code: 'EINVAL' });
    expect(b.setups).toEqual([]);
  });

  it('an iommufd VM needs VSVA_IOMMUFD: a back-end that does not offer it is EOPNOTSUPP at the handshake, before VM_SETUP', async () => {
    const b = backend(ALL_PROTOCOL_FEATURES & ~ProtocolFeature.VSVA_IOMMUFD);
    await expect(startGuest({ connect: b.connect, viommu: 'vtd', memory: 1 << 20, ramBacking: 'inproc', uapi: 'iommufd', reconnect: { enabled: false } })).rejects.toMatchObject({ code: 'EOPNOTSUPP' });
    expect(b.setups).toEqual([]);
  });

  it('VM_SETUP carries UAPI_IOMMUFD for an iommufd VM only', async () => {
    for (const uapi of ['vfio-sva', 'iommufd'] as const) {
      const b = backend(ALL_PROTOCOL_FEATURES);
      // The stub answers no SET_MEM_TABLE: bring-up stops there, after VM_SETUP.
      await expect(startGuest({ connect: b.connect, viommu: 'vtd', memory: 1 << 20, ramBacking: 'inproc', uapi, reconnect: { enabled: false } })).rejects.toBeDefined();
      expect(b.setups.map((f) => (f & VM_SETUP_UAPI_IOMMUFD) !== 0)).toEqual([uapi === 'iommufd']);
    }
  });
});
