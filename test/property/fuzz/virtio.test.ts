/**
 * Virtqueue contents, requests and register writes into the virtio-iommu (bounded for CI;
 * scripts/fuzz-long.ts runs it for longer).
 */
import { fuzzSuite } from './suite.js';
import { runVirtio, virtioCommands } from './virtio.js';

fuzzSuite('fuzz: the virtio-iommu model', virtioCommands, runVirtio, 30);
