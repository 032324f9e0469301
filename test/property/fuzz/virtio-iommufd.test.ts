/**
 * The virtio-iommu fuzzer (virtio.ts) on a VM of the iommufd uAPI (docs/protocol.md §13.12):
 * domains are IOASes, tables nested HWPTs at host PASIDs; the host must match the model.
 */
import { fuzzSuite } from './suite.js';
import { runVirtio, virtioCommands } from './virtio.js';

fuzzSuite('fuzz: the virtio-iommu device on iommufd', virtioCommands, (world, cmds) => runVirtio(world, cmds, 'iommufd'), 30);
