/**
 * The host's memory-file owners (host/vfio/mem-table.ts MemoryFileOwners: file identity → VM
 * name) that tells the VM registry (vm-reservations.ts) when it changes, so that the registry a
 * restarted host reads lists each VM's guest-RAM files.
 */
export class OwnedMemoryFiles extends Map<string, string> {
  constructor(private readonly onChange: () => void) {
    super();
  }

  override set(key: string, vm: string): this {
    const changed = super.get(key) !== vm;
    super.set(key, vm);
    if (changed) this.onChange?.();
    return this;
  }

  override delete(key: string): boolean {
    const had = super.delete(key);
    if (had) this.onChange?.();
    return had;
  }

  /** The file identities (`inode:<dev>:<ino>`) VM `name` owns. */
  filesOf(name: string): string[] {
    const out: string[] = [];
    for (const [k, v] of this) if (v === name && k.startsWith('inode:')) out.push(k);
    return out;
  }

  /** Forget every file of VM `name` (it was released). */
  dropAll(name: string): void {
    for (const [k, v] of [...this]) if (v === name) this.delete(k);
  }
}
