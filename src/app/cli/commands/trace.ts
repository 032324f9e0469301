import * as fs from 'node:fs';
import type { CommandModule, Argv } from 'yargs';
import WebSocket from 'ws';
import { readTrace, TraceRecorder } from '../../../trace/recorder.js';
import { toChromeTrace } from '../../../trace/chrome-export.js';
import type { TraceEvent } from '../../../trace/events.js';

interface ExportArgs {
  inputs: string[];
  out?: string;
}
interface RecordArgs {
  dashboard: string;
  out: string;
  duration?: number;
  token?: string;
}

const exportCommand: CommandModule<object, ExportArgs> = {
  command: 'export <inputs..>',
  describe: 'Convert recorded traces (JSON lines; several are merged on one timeline, e.g. guest and host) to Chrome trace event format for Perfetto',
  builder: (y) =>
    y
      .positional('inputs', { type: 'string', array: true, demandOption: true, describe: 'recorded trace files (.jsonl)' })
      .option('out', { alias: 'o', type: 'string', describe: 'output file (default: <first input>.chrome.json)' }) as Argv<ExportArgs>,
  handler: (args) => {
    const traces = args.inputs.map((f) => readTrace(f));
    const events = traces.flatMap((t) => t.events);
    const doc = toChromeTrace(events, {
      source: traces.map((t) => t.header.source).join(' + '),
      startedAt: traces.map((t) => t.header.startedAt).sort()[0]!,
    });
    const out = args.out ?? args.inputs[0]!.replace(/\.jsonl?$/, '') + '.chrome.json';
    fs.writeFileSync(out, JSON.stringify(doc));
    process.stdout.write(`${events.length} events → ${out} (open in https://ui.perfetto.dev or chrome://tracing)\n`);
  },
};

const recordCommand: CommandModule<object, RecordArgs> = {
  command: 'record',
  describe: "Record a running host's live event stream (from its dashboard) to a file",
  builder: (y) =>
    y
      .option('dashboard', { type: 'string', demandOption: true, describe: 'dashboard URL, e.g. http://127.0.0.1:8080/' })
      .option('out', { alias: 'o', type: 'string', default: 'vsva-trace.jsonl', describe: 'output file (JSON lines)' })
      .option('duration', { type: 'number', describe: 'stop after this many seconds (default: until Ctrl-C)' })
      .option('token', { type: 'string', describe: 'dashboard access token, when it has one' }) as Argv<RecordArgs>,
  handler: async (args) => {
    const url = new URL(args.dashboard);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    url.pathname = '/ws';
    if (args.token) url.searchParams.set('token', args.token);
    const rec = new TraceRecorder(args.out, `dashboard ${args.dashboard}`);
    const ws = new WebSocket(url, { headers: { origin: `${new URL(args.dashboard).origin}` } });
    let dropped = 0;
    await new Promise<void>((resolve, reject) => {
      const stop = () => ws.close();
      process.once('SIGINT', stop);
      if (args.duration) setTimeout(stop, args.duration * 1000).unref();
      // Redrawn in place (\r) on a terminal only; elsewhere a plain line every 10 s.
      const tty = process.stderr.isTTY === true;
      const status = (): string => `recorded ${rec.count} events${dropped ? `, ${dropped} dropped by the server` : ''}`;
      const progress = setInterval(() => process.stderr.write(tty ? `\r${status()}\x1b[K` : `${status()}\n`), tty ? 1000 : 10_000);
      ws.on('message', (data) => {
        const msg = JSON.parse(String(data)) as { type: string; events?: TraceEvent[]; dropped?: number };
        if (msg.type === 'events') {
          for (const ev of msg.events ?? []) rec.record(ev);
          dropped += msg.dropped ?? 0;
        }
      });
      ws.on('error', (e) => {
        clearInterval(progress);
        reject(e);
      });
      ws.on('close', () => {
        clearInterval(progress);
        process.removeListener('SIGINT', stop);
        resolve();
      });
    }).finally(() => rec.close());
    if (process.stderr.isTTY === true) process.stderr.write('\n');
    process.stdout.write(`${rec.count} events → ${args.out}\n`);
  },
};

export const traceCommand: CommandModule = {
  command: 'trace <command>',
  builder: (y) => y.command(exportCommand as CommandModule).command(recordCommand as CommandModule).demandCommand(1),
  handler: () => {},
};
