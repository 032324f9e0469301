/** Every benchmark module `vsva bench` runs, in order. */
import type { BenchModule } from './types.js';

export async function loadBenchModules(only?: string[]): Promise<BenchModule[]> {
  const loaders: Record<string, () => Promise<{ bench: BenchModule }>> = {
    protocol: () => import('./protocol.js'),
    ioasid: () => import('./ioasid.js'),
    iommu: () => import('./iommu.js'),
    'cache-scaling': () => import('./cache-scaling.js'),
    'e2e-vtd': () => import('./e2e-vtd.js'),
    scale: () => import('./scale.js'),
    fairness: () => import('./fairness.js'),
    startup: () => import('./startup.js'),
    'shared-ram': () => import('./shared-ram.js'),
  };
  const names = only && only.length ? only : Object.keys(loaders);
  const out: BenchModule[] = [];
  for (const n of names) {
    const load = loaders[n];
    if (!load) throw new Error(`unknown benchmark '${n}' (known: ${Object.keys(loaders).join(', ')})`);
    out.push((await load()).bench);
  }
  return out;
}
