/** A growable FIFO ring (O(1) push/shift) for outstanding requests and reply slots. */
export class Ring<T> {
  private items: (T | undefined)[] = new Array(16);
  private head = 0;
  private count = 0;

  get length(): number {
    return this.count;
  }

  push(v: T): void {
    if (this.count === this.items.length) {
      const old = this.items;
      const next: (T | undefined)[] = new Array(old.length * 2);
      for (let i = 0; i < this.count; i++) next[i] = old[(this.head + i) % old.length];
      this.items = next;
      this.head = 0;
    }
    this.items[(this.head + this.count) % this.items.length] = v;
    this.count++;
  }

  peek(): T | undefined {
    return this.count === 0 ? undefined : this.items[this.head];
  }

  shift(): T | undefined {
    if (this.count === 0) return undefined;
    const v = this.items[this.head];
    this.items[this.head] = undefined;
    this.head = (this.head + 1) % this.items.length;
    this.count--;
    return v;
  }

  /** Visit every item, oldest first. */
  forEach(fn: (v: T) => void): void {
    for (let i = 0; i < this.count; i++) fn(this.items[(this.head + i) % this.items.length]!);
  }

  clear(): void {
    this.items = new Array(16);
    this.head = 0;
    this.count = 0;
  }
}
