/**
 * The host's young-generation cap (bin/young-generation.js): `capYoungGeneration` keeps V8's
 * new space at its initial size on the running Node, unless a node flag of the user's own sizes
 * it; `isHostCommand` recognises the `host` command. Child processes: the cap is process-wide.
 */
import { describe, it, expect } from 'vitest';
import { spawnSync } from 'node:child_process';
import { isHostCommand } from '../../../bin/young-generation.js';

const moduleUrl = new URL('../../../bin/young-generation.js', import.meta.url).href;

/** Run a child node that (optionally) caps, then keeps ~20 × 1 MB of fresh objects alive in turn; returns whether it capped and its largest new space (MiB). */
function childNewSpace(cap: boolean, env: NodeJS.ProcessEnv = {}): { capped: boolean; maxMiB: number } {
  const script = `
    import v8 from 'node:v8';
    const { capYoungGeneration } = await import(${JSON.stringify(moduleUrl)});
    const capped = ${cap} ? capYoungGeneration() : false;
    const ns = () => v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size / 2 ** 20;
    const keep = [];
    let max = ns();
    for (let r = 0; r < 150; r++) {
      const a = [];
      for (let i = 0; i < 20000; i++) a.push({ i, s: 'x' + i });
      keep.push(a);
      if (keep.length > 20) keep.shift();
      max = Math.max(max, ns());
    }
    process.stdout.write(JSON.stringify({ capped, maxMiB: max }));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, NODE_OPTIONS: '', ...env }, encoding: 'utf8', timeout: 60_000 });
  if (r.status !== 0) throw new Error(`child failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as { capped: boolean; maxMiB: number };
}

describe('the host\'s young generation', () => {
  it('stays at its initial size once capped; without the cap the same work grows it', () => {
    const capped = childNewSpace(true);
    expect(capped.capped).toBe(true);
    expect(capped.maxMiB).toBeLessThanOrEqual(2); // two 1 MiB semi-spaces
    expect(childNewSpace(false).maxMiB).toBeGreaterThan(2);
  });

  it('a young-generation flag of the user\'s own wins: nothing is set', () => {
    const r = childNewSpace(true, { NODE_OPTIONS: '--max-semi-space-size=4' });
    expect(r.capped).toBe(false);
    expect(r.maxMiB).toBeGreaterThan(2);
  });

  it('applies to the host command only', () => {
    expect(isHostCommand(['host', '--socket', '/tmp/x.sock'])).toBe(true);
    expect(isHostCommand(['--log-level', 'info', 'host'])).toBe(true);
    expect(isHostCommand(['bench', '--only', 'fairness'])).toBe(false);
    expect(isHostCommand(['demo', '--', 'host'])).toBe(false);
  });
});
