/**
 * Protocol frames into a host (bounded for CI; scripts/fuzz-long.ts runs it for longer):
 * no host bug errno, no malformed reply, the steady VM unaffected, the host consistent.
 */
import { fuzzSuite } from './suite.js';
import { hostFrameCommands, runHostFrames } from './host-frames.js';

fuzzSuite('fuzz: protocol frames into the host', hostFrameCommands, runHostFrames, 60);
