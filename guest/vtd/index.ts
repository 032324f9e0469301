/**
 * The virtual VT-d device model (DESIGN §3.1). `createVtdModel` is the ViommuFactory body the VM
 * uses for `viommu: 'vtd'`; the rest is exported for inspection by drivers and tests.
 */
import type { GuestContext } from '../viommu.js';
import { VtdModel, type VtdModelContext, type VtdModelOptions } from './vtd-model.js';

export function createVtdModel(ctx: GuestContext | VtdModelContext, opts: VtdModelOptions = {}): VtdModel {
  return new VtdModel(ctx, opts);
}

export { VtdModel, vcmdOffsets, type VtdCounters, type VtdModelContext, type VtdModelOptions } from './vtd-model.js';
export { RegisterFile, type RegisterWrite, type RegisterPart } from './register-file.js';
export type { PasidShadowEntry, ShadowBinding } from './pasid-shadow.js';
export type { InterruptMessage, InterruptSource } from './interrupts.js';
export type { HostPort } from './host-port.js';
export { readContext, readPasidEntry, presentPasidEntries, VTD_HAW, type ContextInfo, type PasidEntryRead, type Walk } from './tables.js';
