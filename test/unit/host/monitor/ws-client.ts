/**
 * A WebSocket test client that queues server messages and lets a test wait for the next one
 * of a given type (consuming it), or for the connection to close.
 */
import { WebSocket } from 'ws';
import { scaled } from '../../../support/slowdown.js';

export type Msg = Record<string, any> & { type: string };

export class WsClient {
  private queue: Msg[] = [];
  private wake: (() => void) | null = null;
  readonly closed: Promise<{ code: number; reason: string }>;

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data) => {
      this.queue.push(JSON.parse(data.toString()) as Msg);
      this.wake?.();
    });
    this.closed = new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
    ws.on('error', () => {});
  }

  static open(url: string, headers: Record<string, string> = {}): Promise<WsClient> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { headers });
      const client = new WsClient(ws);
      ws.once('open', () => resolve(client));
      ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
      ws.once('error', reject);
    });
  }

  send(msg: unknown): void {
    this.ws.send(typeof msg === 'string' ? msg : JSON.stringify(msg));
  }

  /** The next queued message of `type` that satisfies `pred`; earlier ones of other types stay queued. */
  /** `timeoutMs` is the idle-machine deadline; the wait allows it scaled by the slowdown factor. */
  async next(type: string, pred: (m: Msg) => boolean = () => true, timeoutMs = 3000): Promise<Msg> {
    const deadline = Date.now() + scaled(timeoutMs);
    for (;;) {
      const i = this.queue.findIndex((m) => m.type === type && pred(m));
      if (i >= 0) return this.queue.splice(i, 1)[0]!;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no '${type}' message within ${scaled(timeoutMs)} ms (queued: ${this.queue.map((m) => m.type).join(', ')})`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.wake = null;
    }
  }

  /** Messages of `type` queued right now (consumed). */
  drain(type: string): Msg[] {
    const out = this.queue.filter((m) => m.type === type);
    this.queue = this.queue.filter((m) => m.type !== type);
    return out;
  }

  close(): void {
    this.ws.close();
  }
}

export function wsUrl(httpUrl: string, query = ''): string {
  return httpUrl.replace(/^http/, 'ws') + 'ws' + query;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
