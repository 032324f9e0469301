/**
 * The published form of vsva: `npm pack` (its `prepare` script compiles dist/) gives a tarball
 * that installs into an empty directory and works from plain Node — the README tour (startHost,
 * startGuest, readq, dma, snapshot, close) as an .mjs file importing 'vsva', and `vsva --help`
 * from node_modules/.bin. Dependencies come from the npm cache when it has them
 * (--prefer-offline).
 */
import { describe, it, expect } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const run = promisify(execFile);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const MINUTES = 60_000;

const TOUR = `
import { startHost, startGuest } from 'vsva';
const host = await startHost();
const vm = await startGuest({ socket: host.socket, name: 'vm0', viommu: 'vtd' });
const cap = await vm.readq(0x08);
const r = await vm.dma('00:03.0', { pasid: 1, addr: 0x7f00_0000_0000n, length: 64 });
const snap = await host.snapshot();
await vm.close();
await host.close();
console.log(JSON.stringify({ cap: cap.toString(16), dmaDone: typeof r === 'object', vms: snap.vms.map((v) => v.name) }));
`;

describe('the npm package', () => {
  it('packs, installs into an empty directory, and runs the README tour and vsva --help from plain node', { timeout: 6 * MINUTES }, async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vsva-pack-'));
    try {
      // Outside vitest's environment: the installed package must not be told to run source.
      const env: NodeJS.ProcessEnv = { ...process.env, VSVA_LOG: 'warn' };
      delete env.VSVA_FROM_SOURCE;
      const packed = await run('npm', ['pack', '--silent', '--pack-destination', dir], { cwd: ROOT, env, maxBuffer: 64 << 20 });
      const tgz = path.join(dir, packed.stdout.trim().split('\n').pop()!);
      expect(fs.existsSync(tgz)).toBe(true);
      const list = (await run('tar', ['tzf', tgz])).stdout.split('\n');
      expect(list).toContain('package/dist/src/app/index.js');
      expect(list).toContain('package/dist/src/app/index.d.ts');
      expect(list).toContain('package/dist/host/monitor/public/index.html');
      expect(list).toContain('package/LICENSE');
      expect(list).toContain('package/native/vsva_native.c');
      expect(list.filter((f) => f.startsWith('package/test/') || f.startsWith('package/src/'))).toEqual([]);

      const app = path.join(dir, 'app');
      fs.mkdirSync(app);
      fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
      await run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', tgz], { cwd: app, env, maxBuffer: 64 << 20 });
      const installed = JSON.parse(fs.readFileSync(path.join(app, 'node_modules/vsva/package.json'), 'utf8')) as { dependencies: Record<string, string> };
      expect(Object.keys(installed.dependencies)).not.toContain('tsx');
      expect(fs.existsSync(path.join(app, 'node_modules/tsx'))).toBe(false);

      fs.writeFileSync(path.join(app, 'tour.mjs'), TOUR);
      const tour = await run(process.execPath, ['tour.mjs'], { cwd: app, env, timeout: 2 * MINUTES });
      const out = JSON.parse(tour.stdout.trim()) as { cap: string; dmaDone: boolean; vms: string[] };
      expect(out.cap).toMatch(/^[0-9a-f]+$/);
      expect(out.dmaDone).toBe(true);
      expect(out.vms).toEqual(['vm0']);

      const help = await run(path.join(app, 'node_modules/.bin/vsva'), ['--help'], { cwd: app, env });
      expect(help.stdout).toContain('vsva <command> [options]');
      for (const c of ['demo', 'host', 'guest', 'run', 'bench', 'experiment', 'trace']) expect(help.stdout).toContain(`vsva ${c}`);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
