/**
 * A tiny back-end process for the integration test: serves the protocol on the Unix socket path
 * given as argv[2] with an echo/test handler table, prints "ready" once listening, and exits
 * when stdin closes.
 */
import { BackendServer, type Session } from '../../../vhost/index.js';

const path = process.argv[2]!;
const token = new Uint8Array(16).fill(0x5a);
const server = new BackendServer({
  handlers: (session: Session) => ({
    VM_SETUP: () => ({ vm_id: session.id, flags: 0, session_token: token }),
    SET_MEM_TABLE: () => undefined,
    PASID_ALLOC: (r) => ({ pasid: r.min }),
    DMA_UNMAP: async (r) => ({ unmapped: r.size }),
    PAGE_RESPONSE: async (r) => {
      // Echo on the backend channel so the test sees both directions work.
      await session.send('FAULT', { rid: r.rid, flags: 1, pasid: r.pasid, reason: r.grpid, addr: 0x1000n }, { needReply: true });
    },
  }),
});
await server.listen(path);
process.stdout.write('ready\n');
process.stdin.resume();
process.stdin.on('end', () => {
  void server.close().then(() => process.exit(0));
});
