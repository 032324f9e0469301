/**
 * Random descriptor tables on the requestq: the device either serves every published buffer or
 * puts itself in DEVICE_NEEDS_RESET — it never throws out of a register access, never hangs, and
 * works again after a reset.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { startHost, type StartedHost } from '../../../../src/app/harness/start-host.js';
import { REQUESTQ, ReqStatus, VirtioMmio, VirtioStatus } from '../../../../guest/virtio/index.js';
import { LeWriter } from '../../../../guest/virtio/state.js';
import { EP, MEMORY, probeDriver, startRig, type VirtioRig } from '../../../unit/guest/virtio/helpers.js';

let host: StartedHost;
let rig: VirtioRig;

beforeAll(async () => {
  host = await startHost({ spawn: false });
  rig = await startRig({ host });
});
afterAll(async () => {
  await rig.close();
  await host.close();
});

const BUF = 0x20_0000;

const addr = fc.oneof(
  fc.integer({ min: 0, max: 0x3f }).map((i) => BigInt(BUF + i * 64)),
  fc.constant(BigInt(MEMORY - 16)),
  fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
);
const desc = fc.record({
  addr,
  len: fc.oneof(fc.integer({ min: 0, max: 96 }), fc.integer({ min: 0, max: 0xffff_ffff })),
  flags: fc.integer({ min: 0, max: 7 }),
  next: fc.integer({ min: 0, max: 10 }),
});
const scenario = fc.record({
  table: fc.array(desc, { minLength: 8, maxLength: 8 }),
  heads: fc.array(fc.integer({ min: 0, max: 9 }), { minLength: 1, maxLength: 4 }),
  extraIdx: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 0xffff })),
  payload: fc.uint8Array({ minLength: 64 * 64, maxLength: 64 * 64 }),
});

describe('requestq with random descriptor tables', () => {
  it('serves or asks for a reset, and recovers after one', async () => {
    await fc.assert(fc.asyncProperty(scenario, async (s) => {
      const drv = await probeDriver(rig, { queueSize: 8 });
      const { desc: d, avail, used } = drv.queueLayout(REQUESTQ);
      // plausible request bytes: random, but with a known type in each 64-byte slot's first byte
      const payload = Uint8Array.from(s.payload);
      for (let i = 0; i < 64; i++) payload[i * 64] = 1 + (payload[i * 64]! % 9);
      await rig.vm.memwrite(BigInt(BUF), payload);
      for (let i = 0; i < 8; i++) {
        const t = s.table[i]!;
        await rig.vm.memwrite(d + BigInt(16 * i), new LeWriter(16).u64(0, t.addr).u32(8, t.len).u16(12, t.flags).u16(14, t.next).bytes);
      }
      for (let i = 0; i < s.heads.length; i++) await rig.vm.memwrite(avail + 4n + BigInt(2 * i), new LeWriter(2).u16(0, s.heads[i]!).bytes);
      const idx = (s.heads.length + s.extraIdx) & 0xffff;
      await rig.vm.memwrite(avail + 2n, new LeWriter(2).u16(0, idx).bytes);
      await rig.vm.writel(VirtioMmio.QUEUE_NOTIFY, REQUESTQ);

      const status = await rig.vm.readl(VirtioMmio.STATUS);
      const usedIdx = (await rig.vm.memread(used + 2n, 2)).reduce((a, b, i) => a | (b << (8 * i)), 0);
      if (!(status & VirtioStatus.DEVICE_NEEDS_RESET)) expect(usedIdx).toBe(idx);
      await drv.remove();
      const fresh = await probeDriver(rig, { queueSize: 8 });
      expect(await fresh.detach(1, EP)).toBe(ReqStatus.INVAL);
      await fresh.remove();
    }), { numRuns: 60 });
  });
});
