/**
 * The dashboard in a real browser (headless system Chromium through playwright-core): the page
 * shows both VMs, the PASID table follows the selected VM's snapshot, events stream in, and a
 * screenshot is saved to artifacts/dashboard.png.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { existsSync, mkdirSync } from 'node:fs';
import { chromium, type Browser, type Page } from 'playwright-core';
import { scaled } from '../support/wait.js';
import { startMonitor, type MonitorHandle } from '../../host/monitor/index.js';
import { syntheticSnapshot } from '../../host/monitor/synthetic.js';
import { FakeSource, FakeSourceWithStats, pasid, vm } from '../unit/host/monitor/fake-source.js';

const CHROMIUM = '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

function twoVmSource(): FakeSourceWithStats {
  const vtd = vm('vtd-vm0', [pasid(1, 1), pasid(2, 2), pasid(3, 3), pasid(4, null, false), pasid(5, 5), pasid(6, 6)]);
  vtd.devices = [
    { bdf: '00:03.0', kind: 'pf' },
    { bdf: '00:04.0', kind: 'adi' },
  ];
  vtd.pasids[2]!.users = ['iommu', 'kvm', 'vdcm'];
  vtd.pasids[5]!.state = 'free-pending';
  const virtio = vm('virtio-vm1', [pasid(7, 1), pasid(8, 2), pasid(9, null), pasid(10, null, false)], 512);
  virtio.pasids[1]!.bindings[0]!.pgtt = 'pt';
  delete virtio.pasids[1]!.bindings[0]!.flptr;
  const src = new FakeSourceWithStats([vtd, virtio]);
  src.snap.capacity.available = src.snap.capacity.total - 10;
  return src;
}

/** Drive counters and trace events the way a busy host would, until stopped. */
function animate(src: FakeSourceWithStats): () => void {
  let tick = 0;
  const names = ['vtd-vm0', 'virtio-vm1'];
  const timer = setInterval(() => {
    tick++;
    for (const [i, name] of names.entries()) {
      const wave = 1 + Math.round(3 + 3 * Math.sin((tick + i * 7) / 5));
      src.bump(name, 'invalidations', wave * 6);
      src.bump(name, 'iotlbHits', wave * 40);
      src.bump(name, 'iotlbMisses', wave * 3);
      if (tick % 3 === i) src.bump(name, 'allocs');
      if (tick % 3 === i) src.bump(name, 'binds');
      if (tick % 7 === i) src.bump(name, 'pageRequests');
      if (tick % 11 === i) src.bump(name, 'faults');
      src.events.emit({ kind: 'invalidate', side: 'host', vm: name, name: 'PIOTLB psi', args: { pasid: 1 + (tick % 6), addr: '0x' + (0x7f00_0000 + tick * 0x1000).toString(16), am: 0 } });
      if (tick % 3 === i) src.events.emit({ kind: 'bind', side: 'host', vm: name, name: 'BIND_GPASID', args: { hpasid: 1 + (tick % 6), pgtt: 'nested' } });
      if (tick % 7 === i) src.events.emit({ kind: 'page-request', side: 'host', vm: name, name: 'PRQ', args: { pasid: 2, addr: '0x7f0012340000', write: true } });
    }
  }, 100);
  return () => clearInterval(timer);
}

describe('dashboard in Chromium', () => {
  let browser: Browser;
  let monitor: MonitorHandle;
  let page: Page;
  let stop: () => void;
  const src = twoVmSource();
  const problems: string[] = [];

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: install it with 'apt-get install -y chromium' (.ci/run does)`);
    stop = animate(src);
    monitor = await startMonitor(src, { summaryIntervalMs: 250 });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, timeout: scaled(30_000) });
    page = await browser.newPage({ viewport: { width: 1440, height: 1000 } });
    // Playwright's action and wait deadlines scale like every other wait (test/support/slowdown.ts).
    page.setDefaultTimeout(scaled(30_000));
    page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warning') problems.push(`console ${m.type()}: ${m.text()}`);
    });
    await page.goto(monitor.url);
  });

  afterAll(async () => {
    stop?.();
    await browser?.close();
    await monitor?.close();
  });

  it('shows both VMs and the host totals', async () => {
    await page.locator('[data-testid=conn-status][data-state=open]').waitFor();
    const cards = page.locator('[data-testid=vm-card]');
    await expect.poll(() => cards.count()).toBe(2);
    expect(await cards.evaluateAll((els) => els.map((e) => e.getAttribute('data-vm')))).toEqual(['vtd-vm0', 'virtio-vm1']);
    expect(await page.getByTestId('vm-count').textContent()).toBe('2');
    expect(await page.getByTestId('capacity-total').getAttribute('data-value')).toBe(String(2 ** 20 - 1));
    expect(await page.getByTestId('capacity-total').textContent()).toBe('1,048,575');
    expect(await page.getByTestId('capacity-available').getAttribute('data-value')).toBe(String(2 ** 20 - 1 - 10));
    expect(await page.locator('[data-testid=vm-card][data-vm=virtio-vm1]').getAttribute('data-quota')).toBe('512');
  });

  it('shows the selected VM’s PASID table and follows a new PASID', async () => {
    await page.locator('[data-testid=vm-card][data-vm=virtio-vm1]').click();
    await expect.poll(() => page.getByTestId('vm-detail').getAttribute('data-vm')).toBe('virtio-vm1');
    await expect.poll(() => page.locator('[data-testid=pasid-row]').count()).toBe(4);

    await page.locator('[data-testid=vm-card][data-vm=vtd-vm0]').click();
    const rows = page.locator('[data-testid=pasid-row]');
    await expect.poll(() => rows.count()).toBe(6);
    expect(await page.locator('[data-testid=pasid-row][data-hpasid="4242"]').count()).toBe(0);

    src.addPasid('vtd-vm0', pasid(4242, 77));
    const added = page.locator('[data-testid=pasid-row][data-hpasid="4242"]');
    await added.waitFor();
    expect(await added.getAttribute('data-gpasid')).toBe('77');
    expect(await added.locator('td').nth(1).textContent()).toBe('77');
    expect(await rows.count()).toBe(7);
    await expect.poll(() => page.getByTestId('detail-used').textContent()).toBe('7');
  });

  it('streams events and charts, then saves a screenshot', async () => {
    await page.locator('[data-testid=event-row][data-kind=invalidate]').first().waitFor();
    // let a few one-second samples accumulate so the charts have lines worth looking at
    await page.waitForTimeout(4500);
    expect(Number((await page.getByTestId('counter-invalidations').textContent())!.replace(/,/g, ''))).toBeGreaterThan(0);
    expect(await page.locator('#activity-chart polyline').count()).toBe(5);
    mkdirSync('artifacts', { recursive: true });
    await page.screenshot({ path: 'artifacts/dashboard.png', fullPage: true });
    expect(problems).toEqual([]);
  });

  it('draws the host’s recent history at once on a page opened mid-run, without a first spike', async () => {
    // The host has been running for several seconds: a new page gets its last minute in hello.
    const late = await browser.newPage({ viewport: { width: 1440, height: 1000 } });
    late.setDefaultTimeout(scaled(30_000));
    late.on('pageerror', (e) => problems.push(`pageerror (late page): ${e.message}`));
    try {
      await late.goto(monitor.url);
      // page-side code as text: the test's TypeScript has no DOM types
      await late.waitForFunction('window.vsvaDashboard.hello !== null');
      const drawn = await late.evaluate<{ historySamples: number; points: number; maxInvalidationRate: number }>(`(() => {
        const state = window.vsvaDashboard;
        const line = document.querySelector('#activity-chart polyline');
        return {
          historySamples: state.hello.history.samples.length,
          points: (line ? line.getAttribute('points') : '').trim().split(/\\s+/).filter(Boolean).length,
          maxInvalidationRate: Math.max(...state.total.invalidations),
        };
      })()`);
      expect(drawn.historySamples).toBeGreaterThan(1);
      expect(drawn.points).toBeGreaterThan(1);
      // two VMs × at most 7 × 6 invalidations per 100 ms tick: ≤ 840/s; a rate against an empty
      // baseline would be the whole count so far over a fraction of a second
      expect(drawn.maxInvalidationRate).toBeGreaterThan(0);
      expect(drawn.maxInvalidationRate).toBeLessThan(2000);
    } finally {
      await late.close();
    }
    expect(problems).toEqual([]);
  });
});

describe('dashboard in Chromium at 64 VMs × 1024 PASIDs', () => {
  let browser: Browser;
  let monitor: MonitorHandle;
  let page: Page;

  beforeAll(async () => {
    const big = syntheticSnapshot({ vms: 64, pasidsPerVm: 1024 });
    const src = new FakeSource(big.vms);
    src.snap = big;
    monitor = await startMonitor(src, { summaryIntervalMs: 250 });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, timeout: scaled(30_000) });
    page = await browser.newPage({ viewport: { width: 1440, height: 1000 } });
    // Playwright's action and wait deadlines scale like every other wait (test/support/slowdown.ts).
    page.setDefaultTimeout(scaled(30_000));
    await page.goto(monitor.url + '#vm=vm63');
  });

  afterAll(async () => {
    await browser?.close();
    await monitor?.close();
  });

  it('lists every VM and shows one page of the selected VM’s table', async () => {
    await expect.poll(() => page.locator('[data-testid=vm-card]').count()).toBe(64);
    expect(await page.getByTestId('vm-detail').getAttribute('data-vm')).toBe('vm63');
    await expect.poll(() => page.locator('[data-testid=pasid-row]').count()).toBe(100);
    expect(await page.getByTestId('pasid-range').textContent()).toBe('1–100 of 1,024');
    expect(await page.locator('[data-testid=pasid-row]').first().getAttribute('data-hpasid')).toBe(String(63 * 1024 + 1));
  });

  it('pages forward and back through the table', async () => {
    await page.getByTestId('pasid-next').click();
    await expect.poll(() => page.getByTestId('pasid-range').textContent()).toBe('101–200 of 1,024');
    await expect.poll(() => page.locator('[data-testid=pasid-row]').first().getAttribute('data-hpasid')).toBe(String(63 * 1024 + 101));
    await page.getByTestId('pasid-prev').click();
    await expect.poll(() => page.getByTestId('pasid-range').textContent()).toBe('1–100 of 1,024');
  });

  it('filters the VM list by name', async () => {
    await page.getByTestId('vm-filter').fill('vm6');
    // vm6 and vm60..vm63
    await expect.poll(() => page.locator('[data-testid=vm-card]:visible').count()).toBe(5);
    await page.getByTestId('vm-filter').fill('');
    await expect.poll(() => page.locator('[data-testid=vm-card]:visible').count()).toBe(64);
  });
});
