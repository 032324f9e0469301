/**
 * The virtio-mmio v2 transport as a driver sees it: identification, feature negotiation,
 * status, queue setup, config space, interrupts; and malformed rings → DEVICE_NEEDS_RESET.
 */
import { beforeEach, describe, expect, it } from 'vitest';
import { DRIVER_FEATURES, type VirtioIommuDriver } from '../../../../guest/driver/virtio-iommu-driver.js';
import {
  IommuConfig, REQUESTQ, ReqStatus, VIRTIO_MMIO_MAGIC, VirtioInterrupt, VirtioIommuFeature, VirtioMmio, VirtioStatus, VirtioTransportFeature,
  VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE,
} from '../../../../guest/virtio/index.js';
import { LeWriter } from '../../../../guest/virtio/state.js';
import { EP, MEMORY, probeDriver, rigPerTest, type VirtioRig } from './helpers.js';

let rig: VirtioRig;

rigPerTest({}, (r) => {
  rig = r;
});

const rd = (off: number) => rig.vm.readl(off);
const wr = (off: number, v: number) => rig.vm.writel(off, v);

describe('identification and negotiation', () => {
  it('identifies as a version 2 virtio-mmio virtio-iommu (device 23)', async () => {
    expect(await rd(VirtioMmio.MAGIC_VALUE)).toBe(VIRTIO_MMIO_MAGIC);
    expect(await rd(VirtioMmio.VERSION)).toBe(2);
    expect(await rd(VirtioMmio.DEVICE_ID)).toBe(23);
  });

  it('offers VERSION_1, INDIRECT_DESC and the virtio-iommu features, not BYPASS or MMIO', async () => {
    await wr(VirtioMmio.DEVICE_FEATURES_SEL, 0);
    const lo = await rd(VirtioMmio.DEVICE_FEATURES);
    await wr(VirtioMmio.DEVICE_FEATURES_SEL, 1);
    const hi = await rd(VirtioMmio.DEVICE_FEATURES);
    const f = BigInt(lo) | (BigInt(hi) << 32n);
    for (const b of [VirtioIommuFeature.INPUT_RANGE, VirtioIommuFeature.DOMAIN_RANGE, VirtioIommuFeature.MAP_UNMAP, VirtioIommuFeature.PROBE,
      VirtioIommuFeature.BYPASS_CONFIG, VirtioIommuFeature.ATTACH_TABLE, VirtioTransportFeature.VERSION_1, VirtioTransportFeature.INDIRECT_DESC]) {
      expect((f >> b) & 1n).toBe(1n);
    }
    expect((f >> VirtioIommuFeature.BYPASS) & 1n).toBe(0n);
    expect((f >> VirtioIommuFeature.MMIO) & 1n).toBe(0n);
  });

  async function negotiate(lo: number, hi: number): Promise<number> {
    await wr(VirtioMmio.STATUS, 0);
    await wr(VirtioMmio.STATUS, VirtioStatus.ACKNOWLEDGE | VirtioStatus.DRIVER);
    await wr(VirtioMmio.DRIVER_FEATURES_SEL, 0);
    await wr(VirtioMmio.DRIVER_FEATURES, lo);
    await wr(VirtioMmio.DRIVER_FEATURES_SEL, 1);
    await wr(VirtioMmio.DRIVER_FEATURES, hi);
    await wr(VirtioMmio.STATUS, VirtioStatus.ACKNOWLEDGE | VirtioStatus.DRIVER | VirtioStatus.FEATURES_OK);
    return rd(VirtioMmio.STATUS);
  }

  it('accepts a subset of the offer that includes VERSION_1', async () => {
    expect((await negotiate(1 << 2, 1)) & VirtioStatus.FEATURES_OK).toBe(VirtioStatus.FEATURES_OK);
  });

  it('leaves FEATURES_OK clear for a feature it did not offer, or without VERSION_1', async () => {
    expect((await negotiate((1 << 2) | (1 << 3), 1)) & VirtioStatus.FEATURES_OK).toBe(0);
    expect((await negotiate(1 << 2, 0)) & VirtioStatus.FEATURES_OK).toBe(0);
  });

  it('DRIVER_OK without accepted features asks for a reset', async () => {
    await negotiate(1 << 2, 0);
    await wr(VirtioMmio.STATUS, VirtioStatus.ACKNOWLEDGE | VirtioStatus.DRIVER | VirtioStatus.DRIVER_OK);
    expect((await rd(VirtioMmio.STATUS)) & VirtioStatus.DEVICE_NEEDS_RESET).toBeTruthy();
  });
});

describe('config space', () => {
  it('has the spec layout at 0x100', async () => {
    const C = VirtioMmio.CONFIG;
    expect(await rig.vm.readq(C + IommuConfig.PAGE_SIZE_MASK)).toBe(0x4020_1000n);
    expect(await rig.vm.readq(C + IommuConfig.INPUT_RANGE_START)).toBe(0n);
    expect(await rig.vm.readq(C + IommuConfig.INPUT_RANGE_END)).toBe((1n << 48n) - 1n);
    expect(await rd(C + IommuConfig.DOMAIN_RANGE_START)).toBe(1);
    expect(await rd(C + IommuConfig.DOMAIN_RANGE_END)).toBe(0xffff);
    expect(await rd(C + IommuConfig.PROBE_SIZE)).toBe(512);
    expect((await rd(C + IommuConfig.BYPASS)) & 0xff).toBe(1); // boot-bypass default
    expect(await rd(C + 40)).toBe(0); // past the 40-byte config
  });

  it('takes no bypass write before BYPASS_CONFIG is negotiated', async () => {
    await wr(VirtioMmio.CONFIG + IommuConfig.BYPASS, 0);
    expect((await rd(VirtioMmio.CONFIG + IommuConfig.BYPASS)) & 0xff).toBe(1);
  });
});

describe('queues', () => {
  it('reports QueueNumMax for queues 0 and 1 and 0 for a queue that does not exist', async () => {
    for (const [q, max] of [[0, 256], [1, 256], [2, 0]] as const) {
      await wr(VirtioMmio.QUEUE_SEL, q);
      expect(await rd(VirtioMmio.QUEUE_NUM_MAX)).toBe(max);
    }
  });

  it('asks for a reset when a queue is made ready with a size that is not a power of two', async () => {
    await wr(VirtioMmio.QUEUE_SEL, 0);
    await wr(VirtioMmio.QUEUE_NUM, 3);
    await wr(VirtioMmio.QUEUE_READY, 1);
    expect(await rd(VirtioMmio.QUEUE_READY)).toBe(0);
    expect((await rd(VirtioMmio.STATUS)) & VirtioStatus.DEVICE_NEEDS_RESET).toBeTruthy();
    expect((await rd(VirtioMmio.INTERRUPT_STATUS)) & VirtioInterrupt.CONFIG).toBeTruthy();
    await wr(VirtioMmio.STATUS, 0);
    expect(await rd(VirtioMmio.STATUS)).toBe(0);
  });

  it('asks for a reset when a ring lies outside guest RAM', async () => {
    await wr(VirtioMmio.QUEUE_SEL, 0);
    await wr(VirtioMmio.QUEUE_NUM, 16);
    await wr(VirtioMmio.QUEUE_DESC_LOW, MEMORY - 64);
    await wr(VirtioMmio.QUEUE_READY, 1);
    expect((await rd(VirtioMmio.STATUS)) & VirtioStatus.DEVICE_NEEDS_RESET).toBeTruthy();
  });

  it('raises the used-buffer interrupt for a completed request; InterruptACK clears it', async () => {
    const drv = await probeDriver(rig);
    await rig.vm.writel(VirtioMmio.QUEUE_NOTIFY, REQUESTQ); // nothing available: no interrupt
    expect(await rd(VirtioMmio.INTERRUPT_STATUS)).toBe(0);
    expect(await drv.attach(1, EP)).toBe(ReqStatus.OK); // the driver acks what it saw
    expect(await rd(VirtioMmio.INTERRUPT_STATUS)).toBe(0);
  });

  it('serves requests through indirect descriptor tables', async () => {
    const drv = await probeDriver(rig, { indirect: true });
    expect(drv.has(VirtioTransportFeature.INDIRECT_DESC)).toBe(true);
    expect(await drv.attach(1, EP)).toBe(ReqStatus.OK);
    expect(await drv.attach(1, 0x77)).toBe(ReqStatus.NOENT);
  });
});

describe('malformed rings put the device in DEVICE_NEEDS_RESET', () => {
  let drv: VirtioIommuDriver;
  let desc: bigint;
  let avail: bigint;
  let size: number;
  const buf = 0x20_0000n; // some guest RAM for buffers

  beforeEach(async () => {
    drv = await probeDriver(rig);
    ({ desc, avail, size } = drv.queueLayout(REQUESTQ));
  });

  async function putDesc(table: bigint, i: number, addr: bigint, len: number, flags: number, next: number): Promise<void> {
    await rig.vm.memwrite(table + BigInt(16 * i), new LeWriter(16).u64(0, addr).u32(8, len).u16(12, flags).u16(14, next).bytes);
  }

  async function publish(head: number, idx = 1): Promise<void> {
    await rig.vm.memwrite(avail + 4n, new LeWriter(2).u16(0, head).bytes);
    await rig.vm.memwrite(avail + 2n, new LeWriter(2).u16(0, idx).bytes);
    await rig.vm.writel(VirtioMmio.QUEUE_NOTIFY, REQUESTQ);
  }

  async function expectNeedsReset(): Promise<void> {
    expect((await rd(VirtioMmio.STATUS)) & VirtioStatus.DEVICE_NEEDS_RESET).toBe(VirtioStatus.DEVICE_NEEDS_RESET);
    expect((await rd(VirtioMmio.INTERRUPT_STATUS)) & VirtioInterrupt.CONFIG).toBe(VirtioInterrupt.CONFIG);
    // the device stays usable after a reset
    await drv.remove();
    const d2 = await probeDriver(rig);
    expect(await d2.attach(1, EP)).toBe(ReqStatus.OK);
  }

  it('a descriptor loop', async () => {
    await putDesc(desc, 0, buf, 20, VIRTQ_DESC_F_NEXT, 1);
    await putDesc(desc, 1, buf + 64n, 4, VIRTQ_DESC_F_NEXT, 0);
    await publish(0);
    await expectNeedsReset();
  });

  it('a buffer outside guest RAM', async () => {
    await putDesc(desc, 0, BigInt(MEMORY) - 8n, 20, VIRTQ_DESC_F_NEXT, 1);
    await putDesc(desc, 1, buf, 4, VIRTQ_DESC_F_WRITE, 0);
    await publish(0);
    await expectNeedsReset();
  });

  it('a length that overflows the address space', async () => {
    await putDesc(desc, 0, 0xffff_ffff_ffff_f000n, 0x2000, 0, 0);
    await publish(0);
    await expectNeedsReset();
  });

  it('a head or next index beyond the queue size', async () => {
    await publish(size + 3);
    await expectNeedsReset();
  });

  it('an available index that jumps past the queue size', async () => {
    await putDesc(desc, 0, buf, 20, 0, 0);
    await publish(0, size + 1);
    await expectNeedsReset();
  });

  it('a readable descriptor after a writable one', async () => {
    await putDesc(desc, 0, buf, 4, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
    await putDesc(desc, 1, buf + 64n, 20, 0, 0);
    await publish(0);
    await expectNeedsReset();
  });

  it('an indirect table when INDIRECT_DESC was not negotiated', async () => {
    await drv.remove();
    drv = await probeDriver(rig, { features: DRIVER_FEATURES & ~(1n << VirtioTransportFeature.INDIRECT_DESC) });
    ({ desc, avail } = drv.queueLayout(REQUESTQ));
    await putDesc(desc, 0, buf, 32, VIRTQ_DESC_F_INDIRECT, 0);
    await publish(0);
    await expectNeedsReset();
  });

  it('a chain longer than the size limit', async () => {
    await putDesc(desc, 0, buf, 0x80_0000, VIRTQ_DESC_F_NEXT, 1);
    await putDesc(desc, 1, buf, 0x80_0000, VIRTQ_DESC_F_WRITE, 0);
    await publish(0);
    await expectNeedsReset();
  });

  it('stops serving requests until the driver resets', async () => {
    await publish(size + 3);
    await expect(drv.attach(1, EP)).rejects.toMatchObject({ code: 'EIO' });
  });
});
