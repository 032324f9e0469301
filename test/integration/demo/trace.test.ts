/**
 * Recording a real run: `vsva demo --trace DIR` records the guests' and the host's typed events,
 * and `vsva trace export` merges both into one valid Chrome trace with guest-side MMIO and
 * descriptor events beside host-side allocations and binds.
 */
import { describe, it, expect, afterAll } from 'vitest';
import { execFile, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { readTrace } from '../../../src/trace/recorder.js';
import { validateChromeTrace, type ChromeTrace } from '../../../src/trace/chrome-export.js';
import { scaled, waitFor, withDeadline } from '../../support/wait.js';

const run = promisify(execFile);
const BIN = fileURLToPath(new URL('../../../bin/vsva.js', import.meta.url));
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vsva-demo-trace-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Event kinds each side's recording must hold (the recorder writes one JSON event per line). */
const GUEST_KINDS = ['mmio', 'descriptor', 'bind'];
const HOST_KINDS = ['alloc', 'bind', 'message', 'dma'];

function recorded(file: string, kinds: readonly string[]): boolean {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return false;
  }
  return kinds.every((k) => text.includes(`"kind":${JSON.stringify(k)}`));
}

describe('recording a demo run and exporting it for Perfetto', () => {
  it('records guest and host events and exports one merged, valid Chrome trace', async () => {
    // Run the demo until both recordings hold every kind we look for (however long start-up takes
    // on a loaded machine), then stop it with Ctrl-C; --duration only bounds a run gone wrong.
    const child = spawn(process.execPath, [BIN, 'demo', '--duration', String(scaled(60_000) / 1000), '--dashboard-port', '0', '--rate', '10', '--trace', dir], {
      env: { ...process.env, VSVA_LOG: 'warn' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      await waitFor(() => recorded(path.join(dir, 'guest.jsonl'), GUEST_KINDS) && recorded(path.join(dir, 'host.jsonl'), HOST_KINDS), {
        what: 'guest and host events recorded',
        timeoutMs: 30_000,
        intervalMs: 100,
      });
    } catch (e) {
      child.kill('SIGKILL');
      throw new Error(`${(e as Error).message}\nstderr: ${stderr}`);
    }
    child.kill('SIGINT');
    const code = await withDeadline(exited, { what: 'demo exit after SIGINT', timeoutMs: 15_000 }).catch((e: unknown) => {
      child.kill('SIGKILL');
      throw e;
    });
    expect(code, `stderr: ${stderr}`).toBe(0);

    const guest = readTrace(path.join(dir, 'guest.jsonl'));
    const host = readTrace(path.join(dir, 'host.jsonl'));
    const guestKinds = new Set(guest.events.map((e) => e.kind));
    const hostKinds = new Set(host.events.map((e) => e.kind));
    for (const k of GUEST_KINDS) expect(guestKinds, `guest ${k}`).toContain(k);
    for (const k of HOST_KINDS) expect(hostKinds, `host ${k}`).toContain(k);
    expect(guest.events.every((e) => e.side === 'guest')).toBe(true);
    expect(host.events.every((e) => e.side === 'host')).toBe(true);

    const out = path.join(dir, 'demo.chrome.json');
    const { stdout } = await run(process.execPath, [BIN, 'trace', 'export', path.join(dir, 'guest.jsonl'), path.join(dir, 'host.jsonl'), '-o', out]);
    expect(stdout).toContain(`${guest.events.length + host.events.length} events`);
    const doc = JSON.parse(fs.readFileSync(out, 'utf8')) as ChromeTrace;
    expect(validateChromeTrace(doc)).toEqual([]);
    const processes = doc.traceEvents.filter((e) => e.name === 'process_name').map((e) => String(e.args!.name));
    expect(processes).toEqual(expect.arrayContaining(['guest vtd-vm0', 'guest virtio-vm1', 'host vtd-vm0']));
    const ts = doc.traceEvents.filter((e) => e.ph !== 'M').map((e) => e.ts);
    expect(ts).toEqual([...ts].sort((a, b) => a - b));
  }, scaled(60_000));
});
