/**
 * VT-d structures as data: every register, table entry, descriptor and record vsva touches,
 * with encode/decode. See layout.ts for the mechanism and each file for its VT-d spec section.
 */
export * from './layout.js';
export * from './page-table.js';
export * from './pasid-entry.js';
export * from './fault.js';
export * from './registers.js';
export * from './cap-ecap.js';
export * from './root-context.js';
export * from './descriptors.js';
export * from './page-request.js';
export * from './vcmd.js';
