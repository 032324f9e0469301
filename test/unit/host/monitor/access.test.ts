import { describe, it, expect } from 'vitest';
import { checkBindPolicy, checkUpgrade, isLoopbackHost, tokenMatches } from '../../../../host/monitor/access.js';
import { isVsvaError } from '../../../../src/errors.js';

const TOKEN = 'abcdefghijklmnop0123';

function code(fn: () => void): string | undefined {
  try {
    fn();
    return undefined;
  } catch (e) {
    return isVsvaError(e) ? e.code : 'not a VsvaError';
  }
}

describe('dashboard access rules', () => {
  it('knows loopback addresses', () => {
    for (const h of ['127.0.0.1', '127.1.2.3', 'localhost', '::1', '[::1]', 'LOCALHOST']) expect(isLoopbackHost(h), h).toBe(true);
    for (const h of ['0.0.0.0', '::', '10.0.0.1', '192.168.1.5', 'example.com', '128.0.0.1', '127.0.0.1.evil.com']) expect(isLoopbackHost(h), h).toBe(false);
  });

  it('refuses a non-loopback bind without a token (EACCES) and accepts it with one', () => {
    expect(code(() => checkBindPolicy('0.0.0.0', undefined))).toBe('EACCES');
    expect(code(() => checkBindPolicy('::', undefined))).toBe('EACCES');
    expect(code(() => checkBindPolicy('0.0.0.0', TOKEN))).toBeUndefined();
    expect(code(() => checkBindPolicy('127.0.0.1', undefined))).toBeUndefined();
  });

  it('refuses weak or malformed tokens (EINVAL)', () => {
    expect(code(() => checkBindPolicy('127.0.0.1', 'short'))).toBe('EINVAL');
    expect(code(() => checkBindPolicy('127.0.0.1', 'has a space in it ok'))).toBe('EINVAL');
    expect(code(() => checkBindPolicy('0.0.0.0', ''))).toBe('EINVAL');
  });

  it('compares tokens exactly', () => {
    expect(tokenMatches(TOKEN, TOKEN)).toBe(true);
    expect(tokenMatches(TOKEN, TOKEN + 'x')).toBe(false);
    expect(tokenMatches(TOKEN, null)).toBe(false);
    expect(tokenMatches(undefined, TOKEN)).toBe(false);
  });

  const base = { bindHost: '127.0.0.1', token: undefined as string | undefined, hostHeader: '127.0.0.1:8080', origin: undefined as string | undefined, urlToken: null as string | null };

  it('lets same-origin and non-browser clients of a loopback monitor in, read-only', () => {
    expect(checkUpgrade(base)).toEqual({ ok: true, authorized: false });
    expect(checkUpgrade({ ...base, origin: 'http://127.0.0.1:8080' })).toEqual({ ok: true, authorized: false });
    expect(checkUpgrade({ ...base, hostHeader: 'localhost:8080', origin: 'http://localhost:8080' }).ok).toBe(true);
  });

  it('refuses cross-origin pages and rebinding Host names', () => {
    expect(checkUpgrade({ ...base, origin: 'http://evil.example' })).toMatchObject({ ok: false, status: 403 });
    expect(checkUpgrade({ ...base, origin: 'null' })).toMatchObject({ ok: false, status: 403 });
    expect(checkUpgrade({ ...base, hostHeader: 'evil.example:8080' })).toMatchObject({ ok: false, status: 403 });
    expect(checkUpgrade({ ...base, hostHeader: undefined })).toMatchObject({ ok: false, status: 403 });
  });

  it('authorizes a connection whose URL carries the token and refuses a wrong one', () => {
    expect(checkUpgrade({ ...base, token: TOKEN, urlToken: TOKEN })).toEqual({ ok: true, authorized: true });
    expect(checkUpgrade({ ...base, token: TOKEN, urlToken: 'wrong-token-value-xx' })).toMatchObject({ ok: false, status: 401 });
    expect(checkUpgrade({ ...base, token: undefined, urlToken: 'anything-at-all-xx' })).toMatchObject({ ok: false, status: 401 });
  });

  it('requires the token for every connection to a non-loopback monitor', () => {
    const wide = { ...base, bindHost: '0.0.0.0', token: TOKEN, hostHeader: '10.1.2.3:8080' };
    expect(checkUpgrade(wide)).toMatchObject({ ok: false, status: 401 });
    expect(checkUpgrade({ ...wide, urlToken: TOKEN })).toEqual({ ok: true, authorized: true });
  });
});
