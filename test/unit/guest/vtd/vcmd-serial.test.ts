/**
 * The register path of a virtual command: a VCRSP read while the command is in flight waits
 * (boundedly) for it, and the VM's serial queue keeps accesses in program order while running
 * an access at once when nothing else is queued.
 */
import { describe, it, expect } from 'vitest';
import { makeModel } from './harness.js';
import { SerialQueue } from '../../../../guest/serial-queue.js';
import { VCRSP_READ_STALL_MS } from '../../../../guest/vtd/virtual-commands.js';
import { decodeVcrsp, encodeVcmd, VCMD_CMD, VCMD_REG_OFFSETS } from '../../../../src/vtd/vcmd.js';

const OFF = VCMD_REG_OFFSETS['3.1'];

function slowAllocModel(delayMs: number) {
  const m = makeModel();
  const port = m.host.port as unknown as { call(name: string, payload?: unknown): Promise<unknown> };
  const inner = port.call.bind(port);
  port.call = async (name: string, payload?: unknown) => {
    if (name === 'PASID_ALLOC') await new Promise((r) => setTimeout(r, delayMs));
    return inner(name, payload);
  };
  return m;
}

describe('VCRSP reads while a virtual command is in flight', () => {
  it('the first read after the write returns the result when the host answers within the bound', async () => {
    const m = slowAllocModel(0);
    await m.h.writeq(OFF.VCMD, encodeVcmd('3.1', VCMD_CMD.ALLOC_PASID));
    expect(decodeVcrsp('3.1', await m.h.readq(OFF.VCRSP))).toMatchObject({ ip: false, sc: 0, pasid: 1 });
  });

  it('a command slower than the bound shows IP, then the status and result', async () => {
    const m = slowAllocModel(VCRSP_READ_STALL_MS + 40);
    await m.h.writeq(OFF.VCMD, encodeVcmd('3.1', VCMD_CMD.ALLOC_PASID));
    expect(decodeVcrsp('3.1', await m.h.readq(OFF.VCRSP)).ip).toBe(true);
    // A second VCMD write while IP is set is ignored.
    await m.h.writeq(OFF.VCMD, encodeVcmd('3.1', VCMD_CMD.ALLOC_PASID));
    let r = decodeVcrsp('3.1', await m.h.readq(OFF.VCRSP));
    for (let i = 0; r.ip && i < 200; i++) {
      await new Promise((res) => setTimeout(res, 1));
      r = decodeVcrsp('3.1', await m.h.readq(OFF.VCRSP));
    }
    expect(r).toMatchObject({ ip: false, sc: 0, pasid: 1 });
    expect(m.model.counters().vcmd).toMatchObject({ allocs: 1, ignored: 1 });
    expect(m.host.calls.filter((c) => c.name === 'PASID_ALLOC')).toHaveLength(1);
  });

  it('3.3 layout: status and result land at their bits', async () => {
    const m = makeModel({ vcmd: '3.3', quota: 0 });
    const off = VCMD_REG_OFFSETS['3.3'];
    await m.h.writeq(off.VCMD, encodeVcmd('3.3', VCMD_CMD.ALLOC_PASID));
    expect(decodeVcrsp('3.3', await m.h.readq(off.VCRSP))).toMatchObject({ ip: false, sc: 16 });
    await m.h.writeq(off.VCMD, encodeVcmd('3.3', VCMD_CMD.FREE_PASID, 7));
    expect(decodeVcrsp('3.3', await m.h.readq(off.VCRSP))).toMatchObject({ ip: false, sc: 16 });
    await m.h.writeq(off.VCMD, encodeVcmd('3.3', 9));
    expect(decodeVcrsp('3.3', await m.h.readq(off.VCRSP))).toMatchObject({ ip: false, sc: 1 });
  });
});

/** A model whose host answers PASID_FREE as `free` says (the real fake host for everything else). */
function freeModel(free: (pasid: number) => Promise<{ freed: number }>) {
  const m = makeModel();
  const port = m.host.port as unknown as { call(name: string, payload?: unknown): Promise<unknown> };
  const inner = port.call.bind(port);
  port.call = (name: string, payload?: unknown) => (name === 'PASID_FREE' ? free((payload as { min: number }).min) : inner(name, payload));
  return m;
}

async function vcmd(m: ReturnType<typeof makeModel>, cmd: number, operand = 0) {
  await m.h.writeq(OFF.VCMD, encodeVcmd('3.1', cmd, operand));
  let r = decodeVcrsp('3.1', await m.h.readq(OFF.VCRSP));
  for (let i = 0; r.ip && i < 200; i++) {
    await new Promise((res) => setTimeout(res, 1));
    r = decodeVcrsp('3.1', await m.h.readq(OFF.VCRSP));
  }
  return r;
}

describe('VCMD FREE_PASID of a PASID the VM holds', () => {
  const st = { SUCCESS: 0, INVALID_PASID: 2 };

  it('frees it on the host, drops it from the VM and completes with success', async () => {
    const m = makeModel();
    const { pasid } = await vcmd(m, VCMD_CMD.ALLOC_PASID);
    expect(m.model.vcmd!.owned.has(pasid)).toBe(true);
    expect(await vcmd(m, VCMD_CMD.FREE_PASID, pasid)).toMatchObject({ ip: false, sc: st.SUCCESS });
    expect(m.model.vcmd!.owned.has(pasid)).toBe(false);
    expect(m.host.calls.filter((c) => c.name === 'PASID_FREE')).toEqual([{ name: 'PASID_FREE', payload: { min: pasid, max: pasid } }]);
    expect(m.model.counters().vcmd).toMatchObject({ allocs: 1, frees: 1, errors: 0 });
  });

  it('host refuses: INVALID_PASID, and the VM still holds the PASID', async () => {
    const m = freeModel(() => Promise.reject(Object.assign(new Error('no'), { code: 'ENOENT' })));
    const { pasid } = await vcmd(m, VCMD_CMD.ALLOC_PASID);
    expect(await vcmd(m, VCMD_CMD.FREE_PASID, pasid)).toMatchObject({ ip: false, sc: st.INVALID_PASID });
    expect(m.model.vcmd!.owned.has(pasid)).toBe(true);
    expect(m.model.counters().vcmd).toMatchObject({ frees: 0, errors: 1 });
    expect(m.model.vcmd!.busy).toBe(false);
  });

  it('host frees nothing: INVALID_PASID, and the PASID is no longer the VM\'s', async () => {
    const m = freeModel(async () => ({ freed: 0 }));
    const { pasid } = await vcmd(m, VCMD_CMD.ALLOC_PASID);
    expect(await vcmd(m, VCMD_CMD.FREE_PASID, pasid)).toMatchObject({ ip: false, sc: st.INVALID_PASID });
    expect(m.model.vcmd!.owned.has(pasid)).toBe(false);
    expect(m.model.counters().vcmd).toMatchObject({ frees: 0, errors: 1 });
  });

  it('the model\'s clean-up after the free fails (thrown or rejected): INVALID_PASID, the command is over', async () => {
    for (const fail of [() => { throw new Error('sync'); }, () => Promise.reject(new Error('async'))]) {
      const m = makeModel();
      const { pasid } = await vcmd(m, VCMD_CMD.ALLOC_PASID);
      m.model.vcmd!.onFreed = fail as () => Promise<void>;
      expect(await vcmd(m, VCMD_CMD.FREE_PASID, pasid)).toMatchObject({ ip: false, sc: st.INVALID_PASID });
      expect(m.model.vcmd!.owned.has(pasid)).toBe(false);
      expect(m.model.counters().vcmd).toMatchObject({ frees: 0, errors: 1 });
      // The next command runs normally.
      expect(await vcmd(m, VCMD_CMD.ALLOC_PASID)).toMatchObject({ ip: false, sc: st.SUCCESS });
    }
  });

  it('a PASID the VM does not hold: INVALID_PASID without asking the host', async () => {
    const m = makeModel();
    void m.model.mmioWrite(OFF.VCMD, 8, encodeVcmd('3.1', VCMD_CMD.FREE_PASID, 5));
    // Right after the write the command is in flight (VCRSP.IP), as every command is.
    expect(m.model.vcmd!.busy).toBe(true);
    expect(decodeVcrsp('3.1', m.model.regs.read(OFF.VCRSP, 8)).ip).toBe(true);
    expect(decodeVcrsp('3.1', await m.h.readq(OFF.VCRSP))).toMatchObject({ ip: false, sc: st.INVALID_PASID });
    expect(m.host.calls.filter((c) => c.name === 'PASID_FREE')).toEqual([]);
  });
});

describe('SerialQueue', () => {
  it('runs tasks one at a time in submission order: sync, async, throwing, and submitted from inside a task', async () => {
    const q = new SerialQueue();
    const log: string[] = [];
    const tick = () => new Promise((r) => setTimeout(r, 1));
    const a = q.run(() => {
      log.push('a');
      // Submitted during a's synchronous part: must wait for a's asynchronous part too.
      void q.run(() => log.push('nested'));
      return tick().then(() => log.push('a-end'));
    });
    const b = q.run(() => {
      log.push('b');
      throw new Error('b fails');
    });
    const c = q.run(async () => {
      log.push('c');
      await tick();
      log.push('c-end');
      return 3;
    });
    const d = q.run(() => (log.push('d'), 4));
    await a;
    await expect(b).rejects.toThrow('b fails');
    expect(await c).toBe(3);
    expect(await d).toBe(4);
    expect(log).toEqual(['a', 'a-end', 'nested', 'b', 'c', 'c-end', 'd']);
    // Idle again: a synchronous task runs at once and the queue stays usable after a throw.
    let ran = false;
    const e = q.run(() => (ran = true));
    expect(ran).toBe(true);
    await e;
    await expect(q.run(() => Promise.reject(new Error('x')))).rejects.toThrow('x');
    expect(await q.run(() => 5)).toBe(5);
  });
});
