/**
 * What a call throws, as a string a test can compare: 'ok' when it returns, the errno-style code
 * of a VsvaError (src/errors.ts), or the text of anything else.
 */
import { isVsvaError } from '../../src/errors.js';

export function errorCodeOf(fn: () => unknown): string {
  try {
    fn();
    return 'ok';
  } catch (e) {
    return isVsvaError(e) ? e.code : String(e);
  }
}

/** The errno-style code of the VsvaError `fn` must throw; anything else it throws propagates, and a return fails the test. */
export function expectedErrnoOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (isVsvaError(e)) return e.code;
    throw e;
  }
  throw new Error('expected an error');
}

/** `errorCodeOf` for a promise: 'ok' when it resolves, else the VsvaError code or the text. */
export async function asyncErrorCodeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'ok';
  } catch (e) {
    return isVsvaError(e) ? e.code : String(e);
  }
}
