/**
 * Issue 9 acceptance, end to end: headless Chromium loads the dashboard of a running host
 * (startHost with a dashboard; the host in its own process) that serves two real VMs — one
 * VT-d, one virtio-iommu, each with the guest driver model bringing SVA processes up — sees
 * both VMs, sees each VM's PASID table change when a process binds a new PASID, and saves a
 * screenshot to artifacts/dashboard-e2e.png.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { existsSync, mkdirSync } from 'node:fs';
import type { Browser, Page } from 'playwright-core';
import { CHROMIUM, launchChromium, watchedPage } from '../support/dashboard-browser.js';
import { scaled } from '../support/wait.js';
import { startHost, type StartedHost } from '../../src/app/harness/start-host.js';
import { startGuest, type StartedGuest } from '../../src/app/harness/start-guest.js';
import { startSvaGuest, type SvaGuest } from '../../guest/workload/index.js';
import { runDmaJob } from '../../guest/workload/dma-jobs.js';
import type { GuestHandle } from '../../src/api/types.js';

const BDF = '00:03.0';
const MEMORY = 32 * 1024 * 1024;
export const SCREENSHOT = 'artifacts/dashboard-e2e.png';

describe('dashboard of a running host with a VT-d and a virtio-iommu VM', () => {
  let host: StartedHost;
  const vms: { vm: StartedGuest; sva: SvaGuest }[] = [];
  let browser: Browser;
  let page: Page;
  const problems: string[] = [];

  /** A new process on `g` that maps a buffer, binds to the device and DMAs into it. */
  async function bindNewProcess(g: SvaGuest, name: string, pasid?: number): Promise<number> {
    const p = await g.createProcess(name);
    await g.mapPages(p, 0x4000_0000n, 2);
    const id = await g.bind(p, BDF, pasid);
    const target = { dma: (bdf: string, req: Parameters<GuestHandle['dma']>[1]) => g.handle.dma(bdf, req), bdf: BDF, pasid: id };
    const r = await runDmaJob(target, { op: 'fill', addr: 0x4000_0000n, length: 8192, value: 0x42 });
    expect(r.ok).toBe(true);
    // Read it back a few times: the first access to each page misses the IOTLB, later ones hit.
    for (let i = 0; i < 3; i++) expect((await runDmaJob(target, { op: 'read', addr: 0x4000_0000n, length: 8192 })).ok).toBe(true);
    return id;
  }

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: install it with 'apt-get install -y chromium' (.ci/run does)`);
    host = await startHost({ dashboard: { port: 0 } });
    expect(host.dashboard).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
    for (const viommu of ['vtd', 'virtio'] as const) {
      const vm = await startGuest({ socket: host.socket, name: `${viommu}-e2e`, viommu, memory: MEMORY, devices: [{ bdf: BDF, kind: 'pf' }] });
      const sva = await startSvaGuest(vm, { viommu, memory: MEMORY, devices: [{ bdf: BDF }] });
      vms.push({ vm, sva });
      await bindNewProcess(sva, 'first');
    }
    browser = await launchChromium();
    page = await watchedPage(browser, problems);
    await page.goto(host.dashboard!);
  }, scaled(60_000));

  afterAll(async () => {
    await browser?.close();
    for (const { vm, sva } of vms.reverse()) {
      await sva.close().catch(() => undefined);
      await vm.close().catch(() => undefined);
    }
    await host?.close();
  });

  it('shows both VMs, connected, with their PASIDs in use', async () => {
    await page.locator('[data-testid=conn-status][data-state=open]').waitFor();
    const cards = page.locator('[data-testid=vm-card]');
    await expect.poll(() => cards.count()).toBe(2);
    expect((await cards.evaluateAll((els) => els.map((e) => e.getAttribute('data-vm')))).sort()).toEqual(['virtio-e2e', 'vtd-e2e']);
    await expect.poll(() => page.getByTestId('vm-connected-count').textContent()).toBe('2');
    for (const name of ['vtd-e2e', 'virtio-e2e']) {
      await expect.poll(() => page.locator(`[data-testid=vm-card][data-vm=${name}]`).getAttribute('data-used')).toBe('1');
    }
  });

  it('follows the VT-d VM binding a new PASID (VCMD: guest PASID = host PASID)', async () => {
    await page.locator('[data-testid=vm-card][data-vm=vtd-e2e]').click();
    await expect.poll(() => page.getByTestId('vm-detail').getAttribute('data-vm')).toBe('vtd-e2e');
    const rows = page.locator('[data-testid=pasid-row]');
    await expect.poll(() => rows.count()).toBe(1);
    const pasid = await bindNewProcess(vms[0]!.sva, 'second');
    const row = page.locator(`[data-testid=pasid-row][data-hpasid="${pasid}"]`);
    await row.waitFor();
    // A tick may land between the VCMD allocation (idle, no guest PASID yet) and the bind.
    await expect.poll(() => row.getAttribute('data-gpasid')).toBe(String(pasid));
    await expect.poll(() => row.getAttribute('data-state')).toBe('active');
    expect(await rows.count()).toBe(2);
    await expect.poll(() => page.getByTestId('detail-used').textContent()).toBe('2');
  });

  it('follows the virtio-iommu VM binding a guest PASID that maps to another host PASID', async () => {
    await page.locator('[data-testid=vm-card][data-vm=virtio-e2e]').click();
    await expect.poll(() => page.getByTestId('vm-detail').getAttribute('data-vm')).toBe('virtio-e2e');
    const rows = page.locator('[data-testid=pasid-row]');
    await expect.poll(() => rows.count()).toBe(1);
    // The guest picks the PASID number the VT-d VM just got from the host; the host must give it another.
    const snap = await host.snapshot();
    const taken = Math.max(...snap.vms.find((v) => v.name === 'vtd-e2e')!.pasids.map((p) => p.hpasid));
    const gpasid = await bindNewProcess(vms[1]!.sva, 'second', taken);
    expect(gpasid).toBe(taken);
    const row = page.locator(`[data-testid=pasid-row][data-gpasid="${gpasid}"]`);
    await row.waitFor();
    expect(await row.getAttribute('data-hpasid')).not.toBe(String(gpasid));
    await expect.poll(() => rows.count()).toBe(2);

    await page.locator('[data-testid=event-row]').first().waitFor();
    // The host's IOTLB counters reach the page: 2 misses then 6 hits per process → a real ratio.
    await expect.poll(() => page.getByTestId('counter-iotlb').textContent(), { timeout: 5000 }).toMatch(/^(?!0\.0%)\d+\.\d%$/);
    await page.waitForTimeout(1500); // let a chart sample or two land for the screenshot
    mkdirSync('artifacts', { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    expect(existsSync(SCREENSHOT)).toBe(true);
    expect(problems).toEqual([]);
  });
});
