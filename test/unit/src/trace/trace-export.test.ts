import { describe, it, expect, afterEach } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { TraceBus } from '../../../../src/trace/bus.js';
import { TraceRecorder, readTrace } from '../../../../src/trace/recorder.js';
import { toChromeTrace, validateChromeTrace } from '../../../../src/trace/chrome-export.js';

const dirs: string[] = [];
afterEach(() => {
  while (dirs.length) fs.rmSync(dirs.pop()!, { recursive: true, force: true });
});
function tmp(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'vsva-trace-'));
  dirs.push(d);
  return d;
}

function recordSample(file: string): void {
  const bus = new TraceBus();
  const rec = new TraceRecorder(file, 'test').attach(bus);
  bus.emit({ kind: 'mmio', side: 'guest', vm: 'vm0', name: 'write VCMD', args: { offset: 0xe10, value: '0x1' } });
  bus.emit({ kind: 'message', side: 'guest', vm: 'vm0', name: 'PASID_ALLOC', dur: 42 });
  bus.emit({ kind: 'alloc', side: 'host', vm: 'vm0', name: 'PASID 5', args: { hpasid: 5 } });
  bus.emit({ kind: 'fault', side: 'host', name: 'fault 0x71', args: { reason: 0x71 } });
  rec.close();
}

describe('trace recording and Chrome export', () => {
  it('records events as JSON lines and reads them back', () => {
    const file = path.join(tmp(), 'run.jsonl');
    recordSample(file);
    const { header, events } = readTrace(file);
    expect(header.source).toBe('test');
    expect(events.map((e) => e.name)).toEqual(['write VCMD', 'PASID_ALLOC', 'PASID 5', 'fault 0x71']);
    expect(events[1]!.dur).toBe(42);
  });

  it('exports valid Chrome trace JSON with process and thread rows', () => {
    const file = path.join(tmp(), 'run.jsonl');
    recordSample(file);
    const doc = toChromeTrace(readTrace(file).events);
    expect(validateChromeTrace(JSON.parse(JSON.stringify(doc)))).toEqual([]);
    const names = doc.traceEvents.filter((e) => e.name === 'process_name').map((e) => e.args!.name);
    expect(names).toEqual(['guest vm0', 'host vm0', 'host']);
    const complete = doc.traceEvents.find((e) => e.name === 'PASID_ALLOC')!;
    expect(complete.ph).toBe('X');
    expect(complete.dur).toBe(42);
    const instant = doc.traceEvents.find((e) => e.name === 'fault 0x71')!;
    expect(instant.ph).toBe('i');
  });

  it('the validator rejects documents a viewer could not open', () => {
    expect(validateChromeTrace({})).not.toEqual([]);
    expect(validateChromeTrace({ traceEvents: [{ name: 'x', ph: 'X', ts: 1, pid: 1, tid: 1 }] })).toEqual([
      'event 0: complete event without a duration',
    ]);
  });

  it('rejects a file that is not a vsva trace with EINVAL', () => {
    const file = path.join(tmp(), 'bad.jsonl');
    fs.writeFileSync(file, '{"hello":1}\n');
    expect(() => readTrace(file)).toThrow(/EINVAL.*not a vsva trace/);
    fs.writeFileSync(file, '{"vsvaTrace":1,"startedAt":"x","source":"t"}\n{"ts":1}\n');
    expect(() => readTrace(file)).toThrow(/:2: not a trace event/);
  });

  it('`vsva trace export` writes a Chrome trace file', () => {
    const d = tmp();
    const file = path.join(d, 'run.jsonl');
    recordSample(file);
    const out = path.join(d, 'run.json');
    const stdout = execFileSync(process.execPath, ['bin/vsva.js', 'trace', 'export', file, '--out', out], { encoding: 'utf8' });
    expect(stdout).toMatch(/4 events/);
    expect(validateChromeTrace(JSON.parse(fs.readFileSync(out, 'utf8')))).toEqual([]);
  });
});
