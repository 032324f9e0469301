/**
 * Issue 20, dashboard: a running host (startHost, its own process) serves a VFIO SVA VM (a
 * VT-d guest through startGuest), an iommufd VM whose objects a front-end builds with the
 * IOMMUFD_* requests of docs/protocol.md §13 (exact object graph), and an iommufd VT-d guest
 * (startGuest({ uapi: 'iommufd' })) whose SVA processes bind and unbind. Headless Chromium
 * shows the uAPI of each VM and the iommufd VMs' topology — IOAS → nest-parent paging HWPT →
 * nested HWPTs → PASID attachments → device — with the right counts, follows it live as objects
 * are added and destroyed, and saves a screenshot to artifacts/dashboard-iommufd.png.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { existsSync, mkdirSync } from 'node:fs';
import type { Browser, Page } from 'playwright-core';
import { CHROMIUM, launchChromium, watchedPage } from '../support/dashboard-browser.js';
import { scaled } from '../support/wait.js';
import { startHost, type StartedHost } from '../../src/app/harness/start-host.js';
import { startGuest, type StartedGuest } from '../../src/app/harness/start-guest.js';
import { GuestRam } from '../../guest/memory/guest-ram.js';
import { nativeAvailable } from '../../src/native/native.js';
import { startSvaGuest, type SvaGuest } from '../../guest/workload/index.js';
import type { StartGuestAllOptions } from '../../src/app/harness/start-guest.js';
import { FrontendClient, DEFAULT_PROTOCOL_FEATURES, ProtocolFeature, VM_SETUP_UAPI_IOMMUFD, HwptVtdS1Struct, structBytes } from '../../vhost/index.js';
import { IOMMU_HWPT_ALLOC, IOMMUFD_ATTACH, IOMMUFD_DEVICE_CAP } from '../../vhost/messages/iommufd.js';

const MEMORY = 8 * 1024 * 1024;
const SCREENSHOT = 'artifacts/dashboard-iommufd.png';
const NONE = { data_type: 0, data_len: 0, fault_id: 0, data: new Uint8Array(0) };

/** The driver data of a nested HWPT (struct iommu_hwpt_vtd_s1) for a first-level table at `root`. */
function s1(root: number): Uint8Array {
  return structBytes(HwptVtdS1Struct, [{ flags: 0n, pgtbl_addr: BigInt(root), addr_width: 48, __reserved: 0 }]);
}

describe('dashboard of a host with a VFIO SVA VM and an iommufd VM', () => {
  let host: StartedHost;
  let sva: StartedGuest;
  let fdGuest: StartedGuest;
  let fdSva: SvaGuest;
  let fe: FrontendClient;
  let ram: GuestRam;
  let browser: Browser;
  let page: Page;
  const problems: string[] = [];
  const ids = { ioas: 0, dev: 0, dev2: 0, parent: 0, nested: [] as number[] };

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: install it with 'apt-get install -y chromium' (.ci/run does)`);
    host = await startHost({ dashboard: { port: 0 } });
    sva = await startGuest({ socket: host.socket, name: 'sva-vm', viommu: 'vtd', memory: MEMORY, devices: [{ bdf: '00:03.0', kind: 'pf' }] });

    const fdOpts: StartGuestAllOptions & { uapi: 'iommufd' } = { socket: host.socket, name: 'fd-guest', viommu: 'vtd', memory: MEMORY, devices: [{ bdf: '00:03.0', kind: 'pf' }], uapi: 'iommufd' };
    fdGuest = await startGuest(fdOpts);
    fdSva = await startSvaGuest(fdGuest, { viommu: 'vtd', memory: MEMORY, devices: [{ bdf: '00:03.0' }] });

    fe = await FrontendClient.connect({ path: host.socket });
    await fe.handshake({ want: DEFAULT_PROTOCOL_FEATURES | ProtocolFeature.VSVA_IOMMUFD });
    await fe.setupVm({ name: 'fd-vm', pasid_quota: 16, flags: 1 | VM_SETUP_UAPI_IOMMUFD, session_token: new Uint8Array(16) });
    // guest RAM as a sealed memfd passed with SCM_RIGHTS (the fd form, docs/protocol.md §10.1);
    // without the native addon a file in the memory directory the test run allows (path form)
    const fdForm = nativeAvailable();
    ram = GuestRam.create(MEMORY, { backing: fdForm ? 'memfd' : 'file' });
    const region = { guest_phys_addr: 0n, memory_size: BigInt(ram.size), userspace_addr: 0n, mmap_offset: 0n, path: fdForm ? '' : ram.path };
    await fe.call('SET_MEM_TABLE', fdForm ? { regions: [region], fds: [ram.fd!] } : { regions: [region] });
    // IOAS with guest RAM at IOVA = GPA; a nest parent on it; two nested HWPTs at PASIDs 1 and 2 of one device
    ids.ioas = (await fe.call('IOMMUFD_IOAS_ALLOC', { flags: 0 })).out_id;
    await fe.call('IOMMUFD_IOAS_MAP', { ioas_id: ids.ioas, flags: 7, user_va: 0n, length: BigInt(ram.size), iova: 0n });
    ids.dev = (await fe.call('IOMMUFD_DEVICE_BIND', { rid: 0x18, pasid_width: 20, caps: IOMMUFD_DEVICE_CAP.ATS | IOMMUFD_DEVICE_CAP.PRI })).out_id;
    ids.dev2 = (await fe.call('IOMMUFD_DEVICE_BIND', { rid: 0x20, pasid_width: 20, caps: 0 })).out_id;
    ids.parent = (await fe.call('IOMMUFD_HWPT_ALLOC', { flags: IOMMU_HWPT_ALLOC.NEST_PARENT | IOMMU_HWPT_ALLOC.PASID, dev_id: ids.dev, pt_id: ids.ioas, ...NONE })).out_id;
    for (const [i, pasid] of [1, 2].entries()) {
      const nested = (await fe.call('IOMMUFD_HWPT_ALLOC', { flags: IOMMU_HWPT_ALLOC.PASID, dev_id: ids.dev, pt_id: ids.parent, data_type: 1, data_len: 24, fault_id: 0, data: s1(0x10_0000 + i * 0x1000) })).out_id;
      ids.nested.push(nested);
      await fe.call('IOMMUFD_DEVICE_ATTACH', { dev_id: ids.dev, flags: IOMMUFD_ATTACH.PASID, pasid, pt_id: nested });
    }

    browser = await launchChromium();
    page = await watchedPage(browser, problems, { height: 1100 });
    await page.goto(host.dashboard!);
  }, scaled(60_000));

  afterAll(async () => {
    await browser?.close();
    fe?.close();
    await fdSva?.close().catch(() => undefined);
    await fdGuest?.close().catch(() => undefined);
    await sva?.close().catch(() => undefined);
    await host?.close();
    ram?.backing.close();
  });

  it('shows which uAPI each VM uses', async () => {
    await page.locator('[data-testid=conn-status][data-state=open]').waitFor();
    await expect.poll(() => page.locator('[data-testid=vm-card]').count()).toBe(3);
    expect(await page.locator('[data-testid=vm-card][data-vm=sva-vm]').getAttribute('data-uapi')).toBe('vfio-sva');
    expect(await page.locator('[data-testid=vm-card][data-vm=fd-vm]').getAttribute('data-uapi')).toBe('iommufd');
    expect(await page.locator('[data-testid=vm-card][data-vm=fd-guest]').getAttribute('data-uapi')).toBe('iommufd');
    expect(await page.locator('[data-testid=vm-card][data-vm=fd-vm] [data-testid=vm-uapi]').textContent()).toBe('iommufd');

    await page.locator('[data-testid=vm-card][data-vm=sva-vm]').click();
    await expect.poll(() => page.getByTestId('detail-uapi').getAttribute('data-uapi')).toBe('vfio-sva');
    // a VFIO SVA VM has no iommufd objects: no topology
    await expect.poll(() => page.getByTestId('topology-panel').isHidden()).toBe(true);
  });

  it('draws the iommufd VM’s topology with the right counts', async () => {
    await page.locator('[data-testid=vm-card][data-vm=fd-vm]').click();
    await expect.poll(() => page.getByTestId('detail-uapi').getAttribute('data-uapi')).toBe('iommufd');
    const svg = page.getByTestId('topology');
    await expect.poll(() => page.getByTestId('topology-panel').isVisible()).toBe(true);
    await expect.poll(() => svg.getAttribute('data-nested')).toBe('2');
    expect(await svg.getAttribute('data-ioas')).toBe('1');
    expect(await svg.getAttribute('data-paging')).toBe('1');
    expect(await svg.getAttribute('data-nest-parents')).toBe('1');
    expect(await svg.getAttribute('data-devices')).toBe('2');
    expect(await svg.getAttribute('data-pasid-attachments')).toBe('2');
    expect(await svg.getAttribute('data-rid-attachments')).toBe('0');
    const node = (kind: string) => page.locator(`[data-testid=topology-node][data-kind=${kind}]`);
    expect(await node('ioas').count()).toBe(1);
    expect(await node('hwpt-paging').count()).toBe(1);
    expect(await node('hwpt-nested').count()).toBe(2);
    expect(await node('pasid').count()).toBe(2);
    expect(await node('device').count()).toBe(2);
    const edge = (from: string, to: string) => page.locator(`[data-testid=topology-edge][data-from="${from}"][data-to="${to}"]`);
    expect(await edge(`ioas:${ids.ioas}`, `hwpt:${ids.parent}`).count()).toBe(1);
    for (const n of ids.nested) expect(await edge(`hwpt:${ids.parent}`, `hwpt:${n}`).count()).toBe(1);
    expect(await edge(`hwpt:${ids.nested[1]}`, `pasid:${ids.dev}:2`).count()).toBe(1);
    expect(await edge(`pasid:${ids.dev}:2`, `dev:${ids.dev}`).count()).toBe(1);
    expect(await page.getByTestId('topology-summary').textContent()).toBe('1 IOAS · 1 paging HWPT · 2 nested HWPTs · 2 devices · 2 PASIDs');
  });

  it('follows an iommufd guest’s SVA processes: one nested HWPT per bound process, as the host reports', async () => {
    await page.locator('[data-testid=vm-card][data-vm=fd-guest]').click();
    await expect.poll(() => page.getByTestId('vm-detail').getAttribute('data-vm')).toBe('fd-guest');
    const svg = page.getByTestId('topology');
    const BDF = '00:03.0';
    const procs = [];
    const pasids: number[] = [];
    for (const name of ['p1', 'p2']) {
      const p = await fdSva.createProcess(name);
      await fdSva.mapPages(p, 0x4000_0000n, 1);
      pasids.push(await fdSva.bind(p, BDF));
      procs.push(p);
      await expect.poll(() => svg.getAttribute('data-nested')).toBe(String(procs.length));
    }
    // the page draws what the host's snapshot holds
    const objects = (await host.snapshot()).vms.find((v) => v.name === 'fd-guest')!.iommufd!;
    expect(Number(await svg.getAttribute('data-nested'))).toBe(objects.hwpts.filter((h) => h.kind === 'nested').length);
    expect(Number(await svg.getAttribute('data-pasid-attachments'))).toBe(objects.devices.reduce((n, d) => n + d.pasids.length, 0));
    for (const pasid of pasids) {
      const edge = page.locator(`[data-testid=topology-edge][data-kind=attach][data-to$=":${pasid}"]`);
      await edge.waitFor({ state: 'attached' }); // a straight edge has a zero-height box: not 'visible'
      expect(await edge.getAttribute('data-from')).toMatch(/^hwpt:\d+$/);
    }
    // the VCMD-allocated PASIDs are global PASIDs: their rows show the nested binding
    for (const pasid of pasids) await expect.poll(() => page.locator(`[data-testid=pasid-row][data-hpasid="${pasid}"]`).getAttribute('data-state')).toBe('active');

    await fdSva.unbind(procs[0]!, BDF);
    await expect.poll(() => svg.getAttribute('data-nested')).toBe('1');
    await expect.poll(() => page.locator(`[data-testid=topology-edge][data-kind=attach][data-to$=":${pasids[0]}"]`).count()).toBe(0);
  });

  it('follows the objects live: a third nested HWPT on the second device, then a RID attach and a destroy', async () => {
    await page.locator('[data-testid=vm-card][data-vm=fd-vm]').click();
    await expect.poll(() => page.getByTestId('vm-detail').getAttribute('data-vm')).toBe('fd-vm');
    const svg = page.getByTestId('topology');
    await expect.poll(() => svg.getAttribute('data-nested')).toBe('2');
    const third = (await fe.call('IOMMUFD_HWPT_ALLOC', { flags: IOMMU_HWPT_ALLOC.PASID, dev_id: ids.dev2, pt_id: ids.parent, data_type: 1, data_len: 24, fault_id: 0, data: s1(0x10_3000) })).out_id;
    await fe.call('IOMMUFD_DEVICE_ATTACH', { dev_id: ids.dev2, flags: IOMMUFD_ATTACH.PASID, pasid: 7, pt_id: third });
    await expect.poll(() => svg.getAttribute('data-nested')).toBe('3');
    await expect.poll(() => svg.getAttribute('data-pasid-attachments')).toBe('3');
    await page.locator(`[data-testid=topology-edge][data-from="pasid:${ids.dev2}:7"][data-to="dev:${ids.dev2}"]`).waitFor({ state: 'attached' });

    // the second device's RID on the IOAS: an automatic paging HWPT appears
    await fe.call('IOMMUFD_DEVICE_DETACH', { dev_id: ids.dev2, flags: IOMMUFD_ATTACH.PASID, pasid: 7, pt_id: 0 });
    await fe.call('IOMMUFD_DESTROY', { id: third });
    const auto = (await fe.call('IOMMUFD_DEVICE_ATTACH', { dev_id: ids.dev2, flags: 0, pasid: 0, pt_id: ids.ioas })).hwpt_id;
    await expect.poll(() => svg.getAttribute('data-nested')).toBe('2');
    await expect.poll(() => svg.getAttribute('data-rid-attachments')).toBe('1');
    expect(await svg.getAttribute('data-paging')).toBe('2');
    await page.locator(`[data-testid=topology-edge][data-from="hwpt:${auto}"][data-to="rid:${ids.dev2}"]`).waitFor({ state: 'attached' });

    await page.waitForTimeout(800);
    mkdirSync('artifacts', { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    expect(existsSync(SCREENSHOT)).toBe(true);
    expect(problems).toEqual([]);
  });
});
