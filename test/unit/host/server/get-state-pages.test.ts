/**
 * GET_STATE with a page request (docs/protocol.md §10.9): pages walk the VMs by id with a
 * cursor, every VM in exactly one page, the assembled pages equal the whole snapshot; the page
 * size and the cursor are checked (EINVAL). The whole host is paged with the host's monitor
 * token; a connection without it sees its own VM (get-state-scope tests that part).
 * In-process host, in-memory connections.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { HostServer } from '../../../../host/server/index.js';
import { checkStateReplySize } from '../../../../host/server/host-server.js';
import { MAX_REPLY_PAYLOAD } from '../../../../vhost/wire/header.js';
import { GET_STATE, GET_STATE_MAX_PAGE_VMS } from '../../../../vhost/index.js';
import type { HostSnapshot } from '../../../../src/api/types.js';
import { readSnapshotPages } from '../../../../src/app/harness/start-host.js';
import { TestGuest, errnoOf } from '../../../integration/host/client.js';

type Page = HostSnapshot & { next: number | null; vmCount: number };

let host: HostServer;
const guests: TestGuest[] = [];

const TOKEN = 'pages-monitor-token-0123456789';

async function page(g: TestGuest, cursor: number, max_vms: number): Promise<Page> {
  return JSON.parse((await g.fe.call('GET_STATE', { cursor, max_vms, monitor_token: TOKEN })).json) as Page;
}

/** The snapshot without what moves between two reads (counters, timings, IOMMU totals). */
function stable(s: HostSnapshot): unknown {
  return { ...s, iommu: undefined, vms: s.vms.map((v) => ({ ...v, stats: undefined, disconnectedForMs: undefined })) };
}

beforeAll(async () => {
  host = new HostServer({ graceMs: 0, monitorToken: TOKEN });
  for (let i = 0; i < 5; i++) {
    const g = await TestGuest.start({ name: `vm${i}`, connect: host.connector(), backing: 'inproc', quota: 4, mapRam: false });
    await g.alloc();
    guests.push(g);
  }
});

afterAll(async () => {
  for (const g of guests) g.close();
  await host.close();
});

describe('GET_STATE pages', () => {
  it('walk every VM exactly once, in id order, and assemble to the whole snapshot', async () => {
    const g = guests[0]!;
    const seen: string[] = [];
    const cursors: number[] = [];
    let cursor = 0;
    for (;;) {
      const p = await page(g, cursor, 2);
      expect(p.vmCount).toBe(5);
      expect(p.vms.length).toBeLessThanOrEqual(2);
      expect(p.pasidBits).toBe(20);
      seen.push(...p.vms.map((v) => v.name));
      if (p.next === null) break;
      expect(p.next).toBeGreaterThan(cursor);
      cursors.push(p.next);
      cursor = p.next;
    }
    expect(seen).toEqual(['vm0', 'vm1', 'vm2', 'vm3', 'vm4']);
    expect(cursors).toHaveLength(2);
    const whole = JSON.parse(host.snapshotJson()) as HostSnapshot;
    expect(stable(await readSnapshotPages(g.fe, 3, TOKEN))).toEqual(stable(whole));
    expect(stable(whole)).toEqual(stable(host.snapshot()));
  });

  it('a VM released between pages moves no other VM to another page', async () => {
    const extra = await TestGuest.start({ name: 'extra', connect: host.connector(), backing: 'inproc', quota: 4, mapRam: false });
    const g = guests[0]!;
    const first = await page(g, 0, 3); // vm0..vm2
    expect(first.vms.map((v) => v.name)).toEqual(['vm0', 'vm1', 'vm2']);
    extra.close();
    for (let i = 0; i < 50 && host.vm('extra') !== undefined; i++) await new Promise((r) => setTimeout(r, 10));
    const second = await page(g, first.next!, 3);
    expect(second.vms.map((v) => v.name)).toEqual(['vm3', 'vm4']);
    expect(second.next).toBeNull();
  });

  it('a cursor past the last VM gives an empty last page; one past every id issued is EINVAL', async () => {
    const g = guests[0]!;
    const ids = host.vms.map((v) => v.id);
    const after = Math.max(...ids) + 1;
    const empty = await page(g, after, 4);
    expect(empty.vms).toEqual([]);
    expect(empty.next).toBeNull();
    expect(await errnoOf(g.fe.call('GET_STATE', { cursor: 1_000_000, max_vms: 4, monitor_token: TOKEN }))).toBe('EINVAL');
  });

  it('a page size of 0 or above the maximum is EINVAL, as is a payload of another size', async () => {
    const g = guests[0]!;
    expect(await errnoOf(g.fe.call('GET_STATE', { cursor: 0, max_vms: 0 }))).toBe('EINVAL');
    expect(await errnoOf(g.fe.call('GET_STATE', { cursor: 0, max_vms: GET_STATE_MAX_PAGE_VMS + 1 }))).toBe('EINVAL');
    expect(await errnoOf(g.fe.call('GET_STATE', { cursor: 0, max_vms: GET_STATE_MAX_PAGE_VMS + 1, monitor_token: TOKEN }))).toBe('EINVAL');
    expect(() => GET_STATE.request.decode(Buffer.alloc(4))).toThrow(/EINVAL/);
    expect(() => GET_STATE.request.decode(Buffer.alloc(8))).toThrow(/EINVAL/); // max_vms 0
    expect(() => GET_STATE.request.decode(Buffer.alloc(72))).toThrow(/EINVAL/); // max_vms 0, empty token
    expect(() => GET_STATE.request.decode(Buffer.alloc(73))).toThrow(/EINVAL/);
    expect(() => host.snapshotPageJson(0, 0)).toThrow(/EINVAL/);
    expect(() => host.snapshotPageJson(-1, 4)).toThrow(/EINVAL/);
    expect(GET_STATE.request.decode(Buffer.alloc(0))).toBeUndefined();
  });

  it('a document over the reply limit is E2BIG (one VM of several hundred thousand PASIDs)', () => {
    expect(() => checkStateReplySize('x'.repeat(MAX_REPLY_PAYLOAD - 8))).not.toThrow();
    expect(() => checkStateReplySize('x'.repeat(MAX_REPLY_PAYLOAD - 7))).toThrow(/E2BIG/);
    expect(() => checkStateReplySize('é'.repeat((MAX_REPLY_PAYLOAD - 8) / 2 + 1))).toThrow(/E2BIG/); // bytes, not characters
  });
});
