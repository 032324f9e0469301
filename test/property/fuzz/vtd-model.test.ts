/**
 * Invalidation-queue contents, PASID / context entries and register writes into the virtual
 * VT-d (bounded for CI; scripts/fuzz-long.ts runs it for longer).
 */
import { fuzzSuite } from './suite.js';
import { runVtd, vtdCommands } from './vtd-model.js';

fuzzSuite('fuzz: the VT-d model', vtdCommands, runVtd, 40);
