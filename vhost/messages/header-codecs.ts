/**
 * Payload codecs for a fixed header followed by a variable part the header sizes: raw bytes
 * (`HeaderBytesCodec`, e.g. a driver-data blob of data_len bytes) or an array of fixed structs
 * (`HeaderArrayCodec`, with a `count` field). Sizes are exact (EINVAL otherwise) and bounded.
 */
import { fail } from '../../src/errors.js';
import type { Struct } from '../wire/struct.js';
import type { PayloadCodec } from './codec.js';

/** A header struct followed by raw bytes whose length the header gives (at most `max`). */
export class HeaderBytesCodec<H extends object> implements PayloadCodec<H & { data: Uint8Array }> {
  constructor(
    readonly header: Struct<H>,
    private readonly lengthOf: (h: H) => number,
    private readonly max: number,
  ) {}

  sizeOf(v: H & { data: Uint8Array }): number {
    return this.header.size + v.data.length;
  }

  encodeInto(buf: Buffer, off: number, v: H & { data: Uint8Array }): void {
    this.check(v, v.data.length);
    this.header.encodeInto(buf, off, v);
    buf.set(v.data, off + this.header.size);
  }

  decode(p: Buffer): H & { data: Uint8Array } {
    const n = this.header.size;
    if (p.length < n) fail('EINVAL', `${this.header.name}: payload is ${p.length} bytes, shorter than its ${n}-byte header`);
    const h = this.header.decode(p, 0);
    this.check(h, p.length - n);
    return { ...h, data: new Uint8Array(p.subarray(n)) };
  }

  private check(h: H, have: number): void {
    const want = this.lengthOf(h);
    if (want > this.max) fail('EINVAL', `${this.header.name}: ${want} trailing bytes, at most ${this.max}`);
    if (have !== want) fail('EINVAL', `${this.header.name}: ${have} trailing bytes, the header says ${want}`);
  }
}

/** A header struct with a `count` field followed by `count` elements of `element` (at most `max`). */
export class HeaderArrayCodec<H extends { count: number }, E extends object> implements PayloadCodec<H & { items: E[] }> {
  constructor(
    readonly header: Struct<H>,
    readonly element: Struct<E>,
    private readonly max: number,
  ) {}

  sizeOf(v: H & { items: E[] }): number {
    return this.header.size + v.items.length * this.element.size;
  }

  encodeInto(buf: Buffer, off: number, v: H & { items: E[] }): void {
    if (v.count !== v.items.length) fail('EINVAL', `${this.header.name}: count ${v.count} but ${v.items.length} elements`);
    if (v.count > this.max) fail('EINVAL', `${this.header.name}: ${v.count} elements, at most ${this.max}`);
    this.header.encodeInto(buf, off, v);
    v.items.forEach((e, i) => this.element.encodeInto(buf, off + this.header.size + i * this.element.size, e));
  }

  decode(p: Buffer): H & { items: E[] } {
    const n = this.header.size;
    if (p.length < n) fail('EINVAL', `${this.header.name}: payload is ${p.length} bytes, shorter than its ${n}-byte header`);
    const h = this.header.decode(p, 0);
    if (h.count > this.max) fail('EINVAL', `${this.header.name}: ${h.count} elements, at most ${this.max}`);
    const want = n + h.count * this.element.size;
    if (p.length !== want) fail('EINVAL', `${this.header.name}: payload is ${p.length} bytes, expected ${want} for ${h.count} elements`);
    const items: E[] = [];
    for (let i = 0; i < h.count; i++) items.push(this.element.decode(p, n + i * this.element.size));
    return { ...h, items };
  }
}
