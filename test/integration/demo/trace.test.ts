/**
 * Recording a real run: `vsva demo --trace DIR` records the guests' and the host's typed events,
 * and `vsva trace export` merges both into one valid Chrome trace with guest-side MMIO and
 * descriptor events beside host-side allocations and binds.
 */
import { describe, it, expect, afterAll } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { readTrace } from '../../../src/trace/recorder.js';
import { validateChromeTrace, type ChromeTrace } from '../../../src/trace/chrome-export.js';

const run = promisify(execFile);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vsva-demo-trace-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('recording a demo run and exporting it for Perfetto', () => {
  it('records guest and host events and exports one merged, valid Chrome trace', async () => {
    await run(process.execPath, ['bin/vsva.js', 'demo', '--duration', '3', '--dashboard-port', '0', '--rate', '10', '--trace', dir], { timeout: 60_000 });
    const guest = readTrace(path.join(dir, 'guest.jsonl'));
    const host = readTrace(path.join(dir, 'host.jsonl'));
    const guestKinds = new Set(guest.events.map((e) => e.kind));
    const hostKinds = new Set(host.events.map((e) => e.kind));
    for (const k of ['mmio', 'descriptor', 'bind']) expect(guestKinds, `guest ${k}`).toContain(k);
    for (const k of ['alloc', 'bind', 'message', 'dma']) expect(hostKinds, `host ${k}`).toContain(k);
    expect(guest.events.every((e) => e.side === 'guest')).toBe(true);
    expect(host.events.every((e) => e.side === 'host')).toBe(true);

    const out = path.join(dir, 'demo.chrome.json');
    const { stdout } = await run(process.execPath, ['bin/vsva.js', 'trace', 'export', path.join(dir, 'guest.jsonl'), path.join(dir, 'host.jsonl'), '-o', out]);
    expect(stdout).toContain(`${guest.events.length + host.events.length} events`);
    const doc = JSON.parse(fs.readFileSync(out, 'utf8')) as ChromeTrace;
    expect(validateChromeTrace(doc)).toEqual([]);
    const processes = doc.traceEvents.filter((e) => e.name === 'process_name').map((e) => String(e.args!.name));
    expect(processes).toEqual(expect.arrayContaining(['guest vtd-vm0', 'guest virtio-vm1', 'host vtd-vm0']));
    const ts = doc.traceEvents.filter((e) => e.ph !== 'M').map((e) => e.ts);
    expect(ts).toEqual([...ts].sort((a, b) => a - b));
  });
});
