/**
 * The VCRSP stall bound holds for every command, whatever the commands before it did: one timer
 * checks each command's deadline (guest/vtd/virtual-commands.ts), so a fast command, a slow one
 * and a fast one again must each behave as if they were the first.
 */
import { describe, it, expect } from 'vitest';
import { makeModel } from './harness.js';
import { VCRSP_READ_STALL_MS } from '../../../../guest/vtd/virtual-commands.js';
import { decodeVcrsp, encodeVcmd, VCMD_CMD, VCMD_REG_OFFSETS } from '../../../../src/vtd/vcmd.js';

const OFF = VCMD_REG_OFFSETS['3.1'];

type Vcrsp = ReturnType<typeof decodeVcrsp>;

/** Read VCRSP again every millisecond while IP is set (at most 200 times); the last value read. */
async function pollOut(m: ReturnType<typeof makeModel>, first: Vcrsp): Promise<Vcrsp> {
  let r = first;
  for (let i = 0; r.ip && i < 200; i++) {
    await new Promise((res) => setTimeout(res, 1));
    r = decodeVcrsp('3.1', await m.h.readq(OFF.VCRSP));
  }
  return r;
}

describe('VCRSP stall bound across commands', () => {
  it('fast, slow, fast: results on the first read when in time, IP only after the whole bound', async () => {
    const m = makeModel();
    const port = m.host.port as unknown as { call(name: string, payload?: unknown): Promise<unknown> };
    const inner = port.call.bind(port);
    // Every allocation is still in flight when the guest reads VCRSP: a fast one answers on the
    // next turn of the event loop (within the bound), a slow one after the bound.
    let delayMs = 0;
    port.call = async (name: string, payload?: unknown) => {
      if (name === 'PASID_ALLOC') await new Promise((r) => (delayMs > 0 ? setTimeout(r, delayMs) : setImmediate(r)));
      return inner(name, payload);
    };
    const alloc = async () => {
      await m.h.writeq(OFF.VCMD, encodeVcmd('3.1', VCMD_CMD.ALLOC_PASID));
      return decodeVcrsp('3.1', await m.h.readq(OFF.VCRSP));
    };
    // A fast command: its result on the first read — unless that read waited out the whole bound
    // (a loaded machine can take longer than 1 ms for one turn); IP is never shown earlier.
    const fast = async (pasid: number) => {
      await m.h.writeq(OFF.VCMD, encodeVcmd('3.1', VCMD_CMD.ALLOC_PASID));
      const started = performance.now();
      const r = decodeVcrsp('3.1', await m.h.readq(OFF.VCRSP));
      if (r.ip) expect(performance.now() - started).toBeGreaterThanOrEqual(VCRSP_READ_STALL_MS - 1);
      expect(await pollOut(m, r)).toMatchObject({ ip: false, sc: 0, pasid });
    };

    await fast(1);
    await fast(2);
    // Let the bound armed for the earlier commands run out: the next command arms its own.
    await new Promise((res) => setTimeout(res, VCRSP_READ_STALL_MS + 5));

    delayMs = VCRSP_READ_STALL_MS + 40;
    expect((await alloc()).ip).toBe(true); // the bound passed first
    expect(await pollOut(m, decodeVcrsp('3.1', await m.h.readq(OFF.VCRSP)))).toMatchObject({ ip: false, sc: 0, pasid: 3 });

    delayMs = 0;
    await fast(4);
    expect(m.model.counters().vcmd).toMatchObject({ allocs: 4, errors: 0 });
  });

  it('a slow command right after fast ones still waits its whole bound (one timer serves them all)', async () => {
    const m = makeModel();
    const port = m.host.port as unknown as { call(name: string, payload?: unknown): Promise<unknown> };
    const inner = port.call.bind(port);
    let delayMs = 0;
    port.call = async (name: string, payload?: unknown) => {
      if (name === 'PASID_ALLOC') await new Promise((r) => (delayMs > 0 ? setTimeout(r, delayMs) : setImmediate(r)));
      return inner(name, payload);
    };
    const alloc = async () => {
      await m.h.writeq(OFF.VCMD, encodeVcmd('3.1', VCMD_CMD.ALLOC_PASID));
      return decodeVcrsp('3.1', await m.h.readq(OFF.VCRSP));
    };
    // Fast commands arm the timer for the first one's deadline; the slow one starts before it
    // fires. (On a loaded machine a fast one may outlast the bound too: then it is polled out.)
    for (let i = 0; i < 5; i++) {
      expect(await pollOut(m, await alloc())).toMatchObject({ ip: false, sc: 0, pasid: i + 1 });
    }
    delayMs = VCRSP_READ_STALL_MS + 40;
    await m.h.writeq(OFF.VCMD, encodeVcmd('3.1', VCMD_CMD.ALLOC_PASID));
    const started = performance.now();
    const first = decodeVcrsp('3.1', await m.h.readq(OFF.VCRSP));
    const waited = performance.now() - started;
    expect(first.ip).toBe(true);
    // Timers may fire up to a millisecond early against performance.now(): the bound, give or take that.
    expect(waited).toBeGreaterThanOrEqual(VCRSP_READ_STALL_MS - 1);
    expect(await pollOut(m, first)).toMatchObject({ ip: false, sc: 0, pasid: 6 });
  });

  it('a refused allocation completes with NO_PASID on the first read', async () => {
    const m = makeModel({ quota: 1 });
    await m.h.writeq(OFF.VCMD, encodeVcmd('3.1', VCMD_CMD.ALLOC_PASID));
    expect(decodeVcrsp('3.1', await m.h.readq(OFF.VCRSP))).toMatchObject({ ip: false, sc: 0, pasid: 1 });
    await m.h.writeq(OFF.VCMD, encodeVcmd('3.1', VCMD_CMD.ALLOC_PASID));
    expect(decodeVcrsp('3.1', await m.h.readq(OFF.VCRSP))).toMatchObject({ ip: false, sc: 2 });
    expect(m.model.counters().vcmd).toMatchObject({ allocs: 1, errors: 1 });
  });
});
