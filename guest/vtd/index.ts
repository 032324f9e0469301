/**
 * The virtual VT-d device model (docs/design.md §3.1). `createVtdModel` is the ViommuFactory body
 * the VM uses for `viommu: 'vtd'`; the model is exported for inspection by drivers and tests.
 */
import type { GuestContext } from '../viommu.js';
import { VtdModel, type VtdModelOptions } from './vtd-model.js';

export function createVtdModel(ctx: GuestContext, opts: VtdModelOptions = {}): VtdModel {
  return new VtdModel(ctx, opts);
}

export { VtdModel, type VtdCounters, type VtdModelOptions } from './vtd-model.js';
export type { PasidShadowEntry, ShadowBinding } from './pasid-shadow.js';
export type { InterruptMessage, InterruptSource } from './interrupts.js';
