import { describe, it, expect } from 'vitest';
import fs from 'node:fs';
import * as V from '../../../vhost/index.js';
import { Struct, layoutTable } from '../../../vhost/wire/struct.js';

const doc = fs.readFileSync(new URL('../../../docs/protocol.md', import.meta.url), 'utf8');

describe('docs/protocol.md matches the codecs', () => {
  it('every layout table equals the one generated from its struct declaration', () => {
    const blocks = [...doc.matchAll(/<!-- layout:(\w+) -->\n([\s\S]*?)\n<!-- \/layout -->/g)];
    expect(blocks.length).toBeGreaterThan(20);
    for (const [, name, body] of blocks) {
      const st = (V as Record<string, unknown>)[name!];
      expect(st, name).toBeInstanceOf(Struct);
      const s = st as Struct<object>;
      expect(body, name).toBe(`${layoutTable(s)}\n\nTotal: ${s.size} bytes.`);
    }
  });

  it('lists every message code of both channels', () => {
    for (const spec of [...Object.values(V.FrontendMessages), ...Object.values(V.BackendMessages)]) {
      const code = spec.code < 0x100 ? String(spec.code) : `0x${spec.code.toString(16)}`;
      expect(doc, spec.name).toContain(`| ${code} | ${spec.name} |`);
    }
  });
});
