/**
 * `vsva guest --uapi iommufd` against a host process: the mixed SVA workload (binds, DMA jobs,
 * page requests) runs on a VM of the iommufd uAPI, with no check failure, and exits 0; the host's
 * snapshot showed the VM with uAPI iommufd while it ran. An unknown --uapi is refused (exit 1).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { startHost, type StartedHost } from '../../../src/app/harness/start-host.js';
import { scaled, waitFor, withDeadline } from '../../support/wait.js';

let host: StartedHost;
beforeAll(async () => {
  host = await startHost();
});
afterAll(async () => {
  await host?.close();
});

const cli = (args: string[]) => spawn(process.execPath, ['bin/vsva.js', ...args], { env: { ...process.env, VSVA_FROM_SOURCE: '1', VSVA_LOG: 'warn' }, stdio: ['ignore', 'pipe', 'pipe'] });

describe('vsva guest --uapi', () => {
  it.each(['vtd', 'virtio'] as const)('runs the mixed workload on a %s VM of the iommufd uAPI and exits 0', async (viommu) => {
    const name = `cli-fd-${viommu}`;
    const child = cli(['guest', '--socket', host.socket, '--name', name, '--viommu', viommu, '--uapi', 'iommufd', '--memory', '32', '--rate', '20', '--duration', String(scaled(3000) / 1000)]);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    await waitFor(async () => (await host.snapshot()).vms.some((v) => v.name === name), { timeoutMs: 20_000, what: `${name} on the host` });
    expect((await host.snapshot()).vms.find((v) => v.name === name)?.uapi).toBe('iommufd');
    expect(await withDeadline(exited, { timeoutMs: 30_000, what: 'vsva guest exit' }), stderr).toBe(0);
    expect(stdout).toContain(`${name}: ${viommu} VM (iommufd uAPI) up`);
    expect(stdout).toMatch(/[1-9]\d* DMA jobs, 0 check failures, 0 errors/);
  });

  it('refuses an unknown uAPI', () => {
    const r = spawnSync(process.execPath, ['bin/vsva.js', 'guest', '--socket', host.socket, '--uapi', 'iommu'], { env: { ...process.env, VSVA_FROM_SOURCE: '1' }, encoding: 'utf8' });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/uapi/);
  });
});
