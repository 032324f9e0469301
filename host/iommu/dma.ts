/**
 * Device DMA through the translation engine into host memory: reads, writes and copies of any
 * length, across 4 KiB pages and large-page boundaries.
 *
 * Each step translates the current address and moves up to the end of the page it was translated
 * with (`engine.extent`); consecutive steps whose HPAs are contiguous are merged into one run and
 * moved with a single Buffer copy (in-process memory) or one positioned read/write (file-backed
 * memory). A translation fault stops the job: every byte before the faulting address has been
 * moved, nothing at or after it (a copy checks the source, then the destination, of each step).
 * A translated HPA that no host region backs stops the job the same way (reason
 * DMA_UNBACKED_HPA).
 *
 * Addresses are handled as (page number, offset) pairs so any 64-bit input address works.
 */
import { DMA_UNBACKED_HPA } from './fault.js';
import type { TranslationEngine } from './engine.js';
import type { PhysPort } from './phys-port.js';

/** Where a job stopped: `done` bytes were moved; `fault` says why it stopped early. */
export interface DmaStop {
  done: number;
  /** 'translation': engine.fault holds the details; 'memory': unbacked HPA at `hpa`. */
  kind: 'none' | 'translation' | 'memory';
  /** Which side of a copy faulted. */
  side: 'src' | 'dst';
  hpa: number;
}

type Move = (hpa: number, pos: number, len: number) => number;

export class DmaMover {
  /** Outcome of the last job (reused). */
  readonly stop: DmaStop = { done: 0, kind: 'none', side: 'src', hpa: 0 };
  private scratch = Buffer.alloc(0);

  constructor(
    private readonly engine: TranslationEngine,
    private readonly port: PhysPort,
  ) {}

  /** Read `dst.length` bytes from (vpn, off). Returns bytes read; see `stop`. */
  read(rid: number, pasid: number, vpn: number, off: number, flags: number, dst: Uint8Array): number {
    return this.oneSided(rid, pasid, vpn, off, flags, dst.length, (hpa, pos, len) => this.moveOut(hpa, dst, pos, len));
  }

  /** Write `src` at (vpn, off). Returns bytes written; see `stop`. */
  write(rid: number, pasid: number, vpn: number, off: number, flags: number, src: Uint8Array): number {
    return this.oneSided(rid, pasid, vpn, off, flags, src.length, (hpa, pos, len) => this.moveIn(hpa, src, pos, len));
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
    const st = this.stop;
    st.kind = 'none';
    const eng = this.engine;
    let done = 0;
    let sRun = -1;
    let dRun = -1;
    let runLen = 0;
    while (done < length) {
      const s = eng.translateVpn(srid, spasid, svpn, soff, sflags);
      if (s < 0) return this.endCopy(sRun, dRun, runLen, done, 'translation', 'src', 0);
      const sExt = eng.extent;
      const d = eng.translateVpn(drid, dpasid, dvpn, doff, dflags);
      if (d < 0) return this.endCopy(sRun, dRun, runLen, done, 'translation', 'dst', 0);
      let chunk = eng.extent < sExt ? eng.extent : sExt;
      if (chunk > length - done) chunk = length - done;
      if (runLen > 0 && s === sRun + runLen && d === dRun + runLen) {
        runLen += chunk;
      } else {
        if (runLen > 0) {
          const moved = this.moveCopy(sRun, dRun, runLen);
          if (moved < runLen) return this.finish(done - runLen + moved);
        }
        sRun = s;
        dRun = d;
        runLen = chunk;
      }
      done += chunk;
      soff += chunk;
      if (soff >= 4096) {
        svpn += Math.floor(soff / 4096);
        soff %= 4096;
      }
      doff += chunk;
      if (doff >= 4096) {
        dvpn += Math.floor(doff / 4096);
        doff %= 4096;
      }
    }
    return this.endCopy(sRun, dRun, runLen, done, 'none', 'src', 0);
  }

  private endCopy(sRun: number, dRun: number, runLen: number, done: number, kind: DmaStop['kind'], side: DmaStop['side'], hpa: number): number {
    if (runLen > 0) {
      const moved = this.moveCopy(sRun, dRun, runLen);
      if (moved < runLen) return this.finish(done - runLen + moved);
    }
    const st = this.stop;
    st.kind = kind;
    st.side = side;
    st.hpa = hpa;
    st.done = done;
    return done;
  }

  private finish(done: number): number {
    this.stop.done = done;
    return done;
  }

  private oneSided(rid: number, pasid: number, vpn: number, off: number, flags: number, length: number, move: Move): number {
    const st = this.stop;
    st.kind = 'none';
    st.side = 'src';
    const eng = this.engine;
    let done = 0;
    let run = -1;
    let runPos = 0;
    let runLen = 0;
    while (done < length) {
      const h = eng.translateVpn(rid, pasid, vpn, off, flags);
      if (h < 0) {
        if (runLen > 0) {
          const moved = move(run, runPos, runLen);
          if (moved < runLen) return this.finish(runPos + moved);
        }
        st.kind = 'translation';
        return this.finish(done);
      }
      let chunk = eng.extent;
      if (chunk > length - done) chunk = length - done;
      if (runLen > 0 && h === run + runLen) {
        runLen += chunk;
      } else {
        if (runLen > 0) {
          const moved = move(run, runPos, runLen);
          if (moved < runLen) return this.finish(runPos + moved);
        }
        run = h;
        runPos = done;
        runLen = chunk;
      }
      done += chunk;
      off += chunk;
      if (off >= 4096) {
        vpn += Math.floor(off / 4096);
        off %= 4096;
      }
    }
    if (runLen > 0) {
      const moved = move(run, runPos, runLen);
      if (moved < runLen) return this.finish(runPos + moved);
    }
    return this.finish(done);
  }

  /** Host memory [hpa, +len) → dst[pos..]. Returns bytes moved (short on an unbacked HPA). */
  private moveOut(hpa: number, dst: Uint8Array, pos: number, len: number): number {
    const port = this.port;
    let moved = 0;
    while (moved < len) {
      if (!port.resolve(hpa + moved)) return this.unbacked(hpa + moved, moved);
      const n = Math.min(port.avail, len - moved);
      const buf = port.buf;
      if (buf !== undefined) buf.copy(dst, pos + moved, port.off, port.off + n);
      else port.backing!.read(port.off, dst.subarray(pos + moved, pos + moved + n));
      moved += n;
    }
    return moved;
  }

  /** src[pos..pos+len) → host memory at hpa. Returns bytes moved. */
  private moveIn(hpa: number, src: Uint8Array, pos: number, len: number): number {
    const port = this.port;
    let moved = 0;
    while (moved < len) {
      if (!port.resolve(hpa + moved)) return this.unbacked(hpa + moved, moved);
      const n = Math.min(port.avail, len - moved);
      const buf = port.buf;
      const part = src.subarray(pos + moved, pos + moved + n);
      if (buf !== undefined) buf.set(part, port.off);
      else port.backing!.write(port.off, part);
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
    return moved;
  }
}

export { DMA_UNBACKED_HPA };
