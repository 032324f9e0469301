/**
 * The VT-d model fuzzer (vtd-model.ts) on a VM of the iommufd uAPI (docs/protocol.md §13.12): the
 * same random tables, descriptors, register writes, VCMD commands and DMA; the shadow must match
 * the nested HWPTs attached at the VM's PASIDs.
 */
import { fuzzSuite } from './suite.js';
import { runVtd, vtdCommands } from './vtd-model.js';

fuzzSuite('fuzz: the VT-d model on iommufd', vtdCommands, (world, cmds) => runVtd(world, cmds, 'iommufd'), 40);
