import { bench } from './src/bench/iommu.js';
const figs = await bench.run({ quick: process.argv.includes('--quick'), progress: (m) => console.error(m) });
for (const f of figs) console.log(f.name, '|', f.value.median.toExponential(3), f.unit, `[${f.value.min.toExponential(2)}..${f.value.max.toExponential(2)}]`, '| baseline', f.baseline?.value.median.toExponential(3), '| ratio', f.ratio?.toFixed(3), '| met', f.met, f.notes ?? '');
