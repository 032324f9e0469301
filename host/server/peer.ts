/**
 * Who is at the other end of a session, as the memory table needs it: an in-process peer (an
 * in-memory connection from the host's own process: no socket) or a socket peer, with the uid
 * the kernel recorded when it connected (Session.peer, SO_PEERCRED, unix(7)) — undefined when it
 * could not be read (no native addon).
 */
import type { Session } from '../../vhost/roles/server.js';
import type { MemoryPeer } from '../vfio/mem-table.js';

const IN_PROCESS: MemoryPeer = { inProcess: true, uid: undefined };

export function peerOf(s: Session | null): MemoryPeer {
  if (s === null) return IN_PROCESS;
  const socket = (s.dispatcher.conn.transport as { socket?: unknown }).socket;
  if (socket === undefined || socket === null) return IN_PROCESS;
  return { inProcess: false, uid: s.peer.verified ? s.peer.uid : undefined };
}
