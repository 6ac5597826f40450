/**
 * A binary min-heap of items by deadline (epoch ms, or any number that orders them) in which
 * every item knows its own position, so that an item's deadline can be changed and an item
 * removed in O(log n). Holding exactly one entry per item, it never keeps a removed item
 * alive and never needs a rebuild: memory and the time of every call stay bounded by the
 * number of items it holds.
 */
export class DeadlineHeap<T> {
  private readonly deadlines: number[] = [];
  private readonly items: T[] = [];

  /**
   * @param positionOf where the item sits in this heap (-1 when it is not in it)
   * @param setPosition stores the item's position (the heap sets -1 when it leaves)
   */
  constructor(
    private readonly positionOf: (item: T) => number,
    private readonly setPosition: (item: T, position: number) => void,
  ) {}

  /** Number of items. */
  get length(): number {
    return this.items.length;
  }

  /** Whether `item` is in this heap. */
  has(item: T): boolean {
    const position = this.positionOf(item);
    return position >= 0 && this.items[position] === item;
  }

  /** The item with the earliest deadline, or `undefined` when empty. */
  peek(): T | undefined {
    return this.items[0];
  }

  /** The item with the earliest deadline other than `except` (O(1)). */
  peekExcept(except: T | undefined): T | undefined {
    const first = this.items[0];
    if (first !== except || first === undefined) return first;
    const left = this.items[1];
    const right = this.items[2];
    if (right === undefined) return left;
    return (this.deadlines[2] as number) < (this.deadlines[1] as number) ? right : left;
  }

  /** Adds `item` with `deadline`, or moves it there if it is already in. */
  set(item: T, deadline: number): void {
    if (this.has(item)) {
      const position = this.positionOf(item);
      const previous = this.deadlines[position] as number;
      this.deadlines[position] = deadline;
      if (deadline < previous) this.up(position);
      else if (deadline > previous) this.down(position);
      return;
    }
    this.deadlines.push(deadline);
    this.items.push(item);
    this.setPosition(item, this.items.length - 1);
    this.up(this.items.length - 1);
  }

  /** Takes `item` out, if it is in. */
  delete(item: T): void {
    if (!this.has(item)) return;
    const position = this.positionOf(item);
    const last = this.items.length - 1;
    if (position !== last) this.swap(position, last);
    this.deadlines.pop();
    this.items.pop();
    this.setPosition(item, -1);
    if (position < last) {
      this.up(position);
      this.down(position);
    }
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
    this.setPosition(this.items[a] as T, a);
    this.setPosition(item, b);
  }
}
