/**
 * A binary min-heap of items by deadline (epoch ms). Entries are never removed out of order:
 * the owner pushes a new entry whenever an item's deadline changes and skips entries that
 * no longer match (lazy deletion), then calls {@link DeadlineHeap.rebuild} when stale
 * entries pile up.
 */
export class DeadlineHeap<T> {
  private deadlines: number[] = [];
  private items: T[] = [];

  /** Number of entries, stale ones included. */
  get length(): number {
    return this.items.length;
  }

  /** Deadline of the earliest entry, or `undefined` when empty. */
  peekDeadline(): number | undefined {
    return this.deadlines[0];
  }

  /** Item of the earliest entry, or `undefined` when empty. */
  peek(): T | undefined {
    return this.items[0];
  }

  push(deadline: number, item: T): void {
    this.deadlines.push(deadline);
    this.items.push(item);
    this.up(this.items.length - 1);
  }

  /** Removes the earliest entry. */
  pop(): void {
    const last = this.items.length - 1;
    if (last < 0) return;
    this.swap(0, last);
    this.deadlines.pop();
    this.items.pop();
    if (last > 0) this.down(0);
  }

  /** Replaces every entry by `entries` in O(n). */
  rebuild(entries: Iterable<readonly [number, T]>): void {
    this.deadlines = [];
    this.items = [];
    for (const [deadline, item] of entries) {
      this.deadlines.push(deadline);
      this.items.push(item);
    }
    for (let i = (this.items.length >> 1) - 1; i >= 0; i--) this.down(i);
  }

  private up(index: number): void {
    let i = index;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if ((this.deadlines[parent] as number) <= (this.deadlines[i] as number)) return;
      this.swap(i, parent);
      i = parent;
    }
  }

  private down(index: number): void {
    const n = this.items.length;
    let i = index;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= n) return;
      const right = left + 1;
      const child =
        right < n && (this.deadlines[right] as number) < (this.deadlines[left] as number)
          ? right
          : left;
      if ((this.deadlines[i] as number) <= (this.deadlines[child] as number)) return;
      this.swap(i, child);
      i = child;
    }
  }

  private swap(a: number, b: number): void {
    const deadline = this.deadlines[a] as number;
    this.deadlines[a] = this.deadlines[b] as number;
    this.deadlines[b] = deadline;
    const item = this.items[a] as T;
    this.items[a] = this.items[b] as T;
    this.items[b] = item;
  }
}
