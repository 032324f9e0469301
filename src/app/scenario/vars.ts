/**
 * Scenario variables at run time: `as:` and `save:` store PASIDs (number) and addresses
 * (bigint); `$NAME` values are resolved when their step runs. The parser has already checked
 * that an earlier step defines every name, so a missing value means that step failed or did not
 * run.
 */
import { fail } from '../../errors.js';
import { hex } from './show.js';
import type { AddrValue, IntValue } from './types.js';

export type Vars = Map<string, number | bigint>;

export function resolveInt(v: IntValue, vars: Vars): number {
  if (typeof v === 'number') return v;
  const x = vars.get(v.ref);
  if (x === undefined) fail('EINVAL', `variable $${v.ref} has no value (the step that defines it did not run or failed)`);
  if (typeof x === 'bigint') {
    if (x > BigInt(Number.MAX_SAFE_INTEGER)) fail('EINVAL', `variable $${v.ref} holds ${hex(x)}, not a PASID or count`);
    return Number(x);
  }
  return x;
}

export function resolveAddr(v: AddrValue, vars: Vars): bigint {
  if (typeof v === 'bigint') return v;
  const x = vars.get(v.ref);
  if (x === undefined) fail('EINVAL', `variable $${v.ref} has no value (the step that defines it did not run or failed)`);
  return BigInt(x);
}
