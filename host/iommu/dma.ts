/**
 * Device DMA through the translation engine into host memory: reads, writes and copies of any
 * length, across 4 KiB pages and large-page boundaries.
 *
 * Each step translates the current address and moves up to the end of the page it was translated
 * with (`engine.extent`); consecutive steps whose HPAs are contiguous are merged into one run and
 * moved with a single Buffer copy (in-process memory) or one positioned read/write (file-backed
 * memory). A translation fault stops the job: every byte before the faulting address has been
 * moved, nothing at or after it (a copy checks the source, then the destination, of each step).
 * A translated HPA that no host region backs stops the job the same way (fault.ts
 * DMA_UNBACKED_HPA).
 *
 * Addresses are handled as (page number, offset) pairs so any 64-bit input address works; the
 * position of each step is the start's offset plus the bytes done, split again into page and offset.
 */
import type { TranslationEngine } from './engine.js';
import type { PhysPort } from './phys-port.js';

/** Where a job stopped: `done` bytes were moved; `fault` says why it stopped early. */
export interface DmaStop {
  done: number;
  /** 'translation': the engine's lastFault() has the details; 'memory': unbacked HPA at `hpa`. */
  kind: 'none' | 'translation' | 'memory';
  /** Which side of a copy faulted. */
  side: 'src' | 'dst';
  hpa: number;
}

/** Moves [s, +len) of a run: a copy reads host memory at s and writes at d; a read or write moves job bytes [pos, +len). */
type Move = (s: number, d: number, pos: number, len: number) => number;

/** One requester side of a job: who issues it and where it starts. */
class Side {
  rid = 0;
  pasid = 0;
  vpn = 0;
  off = 0;
  flags = 0;

  set(rid: number, pasid: number, vpn: number, off: number, flags: number): Side {
    this.rid = rid;
    this.pasid = pasid;
    this.vpn = vpn;
    this.off = off;
    this.flags = flags;
    return this;
  }
}

export class DmaMover {
  /** Outcome of the last job (reused). */
  readonly stop: DmaStop = { done: 0, kind: 'none', side: 'src', hpa: 0 };
  /** Bytes the last short move moved before the unbacked HPA. */
  private moved = 0;
  private scratch = Buffer.alloc(0);
  private readonly src = new Side();
  private readonly dst = new Side();

  constructor(
    private readonly engine: TranslationEngine,
    private readonly port: PhysPort,
  ) {}

  /** Read `dst.length` bytes from (vpn, off). Returns bytes read; see `stop`. */
  read(rid: number, pasid: number, vpn: number, off: number, flags: number, dst: Uint8Array): number {
    return this.run(this.src.set(rid, pasid, vpn, off, flags), null, dst.length, (s, _d, pos, len) => this.moveData(s, dst, pos, len, false));
  }

  /** Write `src` at (vpn, off). Returns bytes written; see `stop`. */
  write(rid: number, pasid: number, vpn: number, off: number, flags: number, src: Uint8Array): number {
    return this.run(this.src.set(rid, pasid, vpn, off, flags), null, src.length, (s, _d, pos, len) => this.moveData(s, src, pos, len, true));
  }

  /**
   * Copy `length` bytes from the source requester's (svpn, soff) to the destination requester's
   * (dvpn, doff). Returns bytes copied; see `stop`.
   */
  copy(
    srid: number,
    spasid: number,
    svpn: number,
    soff: number,
    sflags: number,
    drid: number,
    dpasid: number,
    dvpn: number,
    doff: number,
    dflags: number,
    length: number,
  ): number {
    const src = this.src.set(srid, spasid, svpn, soff, sflags);
    const dst = this.dst.set(drid, dpasid, dvpn, doff, dflags);
    return this.run(src, dst, length, (s, d, _pos, len) => this.moveCopy(s, d, len));
  }

  /**
   * The job loop: translate each step (the source side, then the destination side of a copy),
   * merge steps whose HPAs continue the pending run, move a run when the next step does not
   * continue it, and stop at the first fault. Returns the bytes moved.
   */
  private run(src: Side, dst: Side | null, length: number, move: Move): number {
    const st = this.stop;
    st.kind = 'none';
    st.side = 'src';
    const eng = this.engine;
    let done = 0;
    // The pending run: host memory [sRun, +runLen) (→ [dRun, +runLen) for a copy), job bytes [runPos, +runLen).
    let sRun = -1;
    let dRun = -1;
    let runPos = 0;
    let runLen = 0;
    while (done < length) {
      const sp = src.off + done;
      const s = eng.translateVpn(src.rid, src.pasid, src.vpn + Math.floor(sp / 4096), sp % 4096, src.flags);
      if (s < 0) {
        st.kind = 'translation';
        break;
      }
      let chunk = eng.extent;
      let d = s;
      if (dst !== null) {
        const dp = dst.off + done;
        d = eng.translateVpn(dst.rid, dst.pasid, dst.vpn + Math.floor(dp / 4096), dp % 4096, dst.flags);
        if (d < 0) {
          st.kind = 'translation';
          st.side = 'dst';
          break;
        }
        if (eng.extent < chunk) chunk = eng.extent;
      }
      if (chunk > length - done) chunk = length - done;
      if (runLen > 0 && s === sRun + runLen && d === dRun + runLen) {
        runLen += chunk;
      } else {
        if (runLen > 0 && move(sRun, dRun, runPos, runLen) < runLen) return this.finish(runPos + this.moved);
        sRun = s;
        dRun = d;
        runPos = done;
        runLen = chunk;
      }
      done += chunk;
    }
    if (runLen > 0 && move(sRun, dRun, runPos, runLen) < runLen) return this.finish(runPos + this.moved);
    return this.finish(done);
  }

  private finish(done: number): number {
    this.stop.done = done;
    return done;
  }

  /**
   * Move job bytes [pos, +len) between `bytes` and host memory [hpa, +len): out of host memory
   * (a read) or into it (`intoHost`, a write). Returns bytes moved (short on an unbacked HPA).
   */
  private moveData(hpa: number, bytes: Uint8Array, pos: number, len: number, intoHost: boolean): number {
    const port = this.port;
    let moved = 0;
    while (moved < len) {
      if (!port.resolve(hpa + moved)) return this.unbacked(hpa + moved, moved);
      const n = Math.min(port.avail, len - moved);
      const part = bytes.subarray(pos + moved, pos + moved + n);
      const buf = port.buf;
      if (intoHost) {
        if (buf !== undefined) buf.set(part, port.off);
        else port.backing!.write(port.off, part);
      } else if (buf !== undefined) buf.copy(part, 0, port.off, port.off + n);
      else port.backing!.read(port.off, part);
      moved += n;
    }
    return moved;
  }

  /** Host memory [s, +len) → [d, +len). Returns bytes moved. */
  private moveCopy(s: number, d: number, len: number): number {
    const port = this.port;
    let moved = 0;
    while (moved < len) {
      if (!port.resolve(s + moved)) return this.unbacked(s + moved, moved, 'src');
      const sBuf = port.buf;
      const sBacking = port.backing!;
      const sOff = port.off;
      let n = Math.min(port.avail, len - moved);
      if (!port.resolve(d + moved)) return this.unbacked(d + moved, moved, 'dst');
      n = Math.min(n, port.avail);
      const dBuf = port.buf;
      if (sBuf !== undefined && dBuf !== undefined) {
        sBuf.copy(dBuf, port.off, sOff, sOff + n);
      } else {
        if (this.scratch.length < n) this.scratch = Buffer.alloc(Math.max(n, 65536));
        const tmp = this.scratch.subarray(0, n);
        if (sBuf !== undefined) sBuf.copy(tmp, 0, sOff, sOff + n);
        else sBacking.read(sOff, tmp);
        if (dBuf !== undefined) dBuf.set(tmp, port.off);
        else port.backing!.write(port.off, tmp);
      }
      moved += n;
    }
    return moved;
  }

  private unbacked(hpa: number, moved: number, side: DmaStop['side'] = this.stop.side): number {
    const st = this.stop;
    st.kind = 'memory';
    st.side = side;
    st.hpa = hpa;
    this.moved = moved;
    return moved;
  }
}

