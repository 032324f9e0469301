import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { parseClientMessage, MAX_SUBSCRIPTIONS, MAX_PAGE_ROWS, DEFAULT_PAGE_ROWS, MAX_CLIENT_MESSAGE_BYTES } from '../../../../host/monitor/protocol.js';

const parse = (v: unknown) => parseClientMessage(typeof v === 'string' ? v : JSON.stringify(v));

describe('client message validation', () => {
  it('accepts a subscribe and fills in the default page window', () => {
    expect(parse({ type: 'subscribe', vms: [{ name: 'vm0' }, { name: 'vm1', offset: 100, limit: 50 }] })).toEqual({
      ok: true,
      msg: {
        type: 'subscribe',
        vms: [
          { name: 'vm0', offset: 0, limit: DEFAULT_PAGE_ROWS },
          { name: 'vm1', offset: 100, limit: 50 },
        ],
      },
    });
    expect(parse({ type: 'subscribe', vms: [] })).toEqual({ ok: true, msg: { type: 'subscribe', vms: [] } });
  });

  it('accepts ping and control messages', () => {
    expect(parse({ type: 'ping', id: 7 })).toEqual({ ok: true, msg: { type: 'ping', id: 7 } });
    expect(parse({ type: 'ping' })).toEqual({ ok: true, msg: { type: 'ping', id: null } });
    expect(parse({ type: 'control', action: 'disconnect-vm', vm: 'vm0', token: 't' })).toEqual({
      ok: true,
      msg: { type: 'control', id: null, action: 'disconnect-vm', vm: 'vm0', token: 't' },
    });
  });

  it.each([
    ['not JSON', '{type:', 'not valid JSON'],
    ['an array', '[1,2]', 'JSON object'],
    ['null', 'null', 'JSON object'],
    ['no type', { vms: [] }, 'unknown message type'],
    ['an unknown type', { type: 'shutdown' }, 'unknown message type'],
    ['a prototype key as type', { type: '__proto__' }, 'unknown message type'],
    ['an unknown field', { type: 'ping', extra: 1 }, "unknown field 'extra'"],
    ['vms not an array', { type: 'subscribe', vms: 'vm0' }, "'vms' must be an array"],
    ['a subscription that is not an object', { type: 'subscribe', vms: ['vm0'] }, 'must be an object'],
    ['an empty VM name', { type: 'subscribe', vms: [{ name: '' }] }, 'name must be a string'],
    ['a numeric VM name', { type: 'subscribe', vms: [{ name: 3 }] }, 'name must be a string'],
    ['a duplicate VM', { type: 'subscribe', vms: [{ name: 'a' }, { name: 'a' }] }, 'listed twice'],
    ['a negative offset', { type: 'subscribe', vms: [{ name: 'a', offset: -1 }] }, 'offset must be an integer'],
    ['a fractional offset', { type: 'subscribe', vms: [{ name: 'a', offset: 1.5 }] }, 'offset must be an integer'],
    ['a zero limit', { type: 'subscribe', vms: [{ name: 'a', limit: 0 }] }, 'limit must be an integer'],
    ['a limit over the cap', { type: 'subscribe', vms: [{ name: 'a', limit: MAX_PAGE_ROWS + 1 }] }, 'limit must be an integer'],
    ['an unknown subscription field', { type: 'subscribe', vms: [{ name: 'a', sort: 'x' }] }, "unknown field 'sort'"],
    ['an unknown control action', { type: 'control', action: 'reboot-host' }, 'unknown action'],
    ['disconnect-vm without a VM', { type: 'control', action: 'disconnect-vm' }, "needs 'vm'"],
    ['a string id', { type: 'ping', id: '1' }, "'id' must be"],
  ])('rejects %s with EINVAL', (_what, msg, text) => {
    const r = parse(msg);
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.code).toBe('EINVAL');
      expect(r.message).toContain(text);
    }
  });

  it('rejects too many subscriptions with E2BIG', () => {
    const vms = Array.from({ length: MAX_SUBSCRIPTIONS + 1 }, (_, i) => ({ name: `vm${i}` }));
    expect(parse({ type: 'subscribe', vms })).toMatchObject({ ok: false, code: 'E2BIG' });
  });

  it('rejects an oversized message with E2BIG', () => {
    const r = parse(JSON.stringify({ type: 'ping' }) + ' '.repeat(MAX_CLIENT_MESSAGE_BYTES));
    expect(r).toMatchObject({ ok: false, code: 'E2BIG' });
  });

  it('never throws, whatever the text', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.json(), fc.jsonValue().map((v) => JSON.stringify({ type: 'subscribe', vms: v }))), (text) => {
        const r = parseClientMessage(text);
        expect(typeof r.ok).toBe('boolean');
      }),
      { numRuns: 300 },
    );
  });
});
