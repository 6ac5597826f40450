/**
 * One entry of a {@link FixedDelayTimers}: an object that can wait in one such queue at a
 * time. The queue owns the `timer*` fields (the entry is its own list node, so waiting
 * allocates nothing).
 */
export interface TimedEntry {
  /** When the entry is due, on the queue's monotonic clock (ms). */
  timerDue: number;
  timerPrev: TimedEntry | undefined;
  timerNext: TimedEntry | undefined;
  /** Whether the entry waits in a queue now. */
  timerQueued: boolean;
  /** Called once when the entry is due (it has left the queue already). */
  onTimer(): void;
}

/** A monotonic clock in ms: `performance.now` unless a test gives another. */
export type MonotonicNow = () => number;

/**
 * Many timers of one fixed delay on one Node timer: a heartbeat per execution, where most
 * executions end long before theirs is due. Every entry is due `delayMs` after it was added,
 * so the entries are due in the order they were added: a linked list (O(1) to add and to
 * remove, nothing allocated) and one timer, armed for the first entry.
 *
 * Timing: an entry runs no earlier than `delayMs` after it was added (as a `setTimeout` of
 * its own would, at the same millisecond granularity: Node counts whole ms from its loop's
 * time, so up to 1 ms early on `performance.now()`, however many timers ran before it) and
 * no later than the queue's timer runs after that. Removing an entry does not touch the timer: when it fires with nothing
 * due it arms itself for the new first entry, or stops when the queue is empty. The timer is
 * `unref`'d, so waiting entries never keep the process alive (as the per-execution timers
 * before it were). {@link close} stops the timer and empties the queue.
 *
 * A clock that does not move with the timers (fake timers that fake `setTimeout` but not
 * `performance`) can only make later entries run early, right after the first one, never
 * late: the timer is armed for the gap between two entries' due times, capped by what the
 * clock says is left.
 */
export class FixedDelayTimers {
  private first: TimedEntry | undefined;
  private last: TimedEntry | undefined;
  private timer: ReturnType<typeof setTimeout> | undefined;
  /** The due time the armed timer waits for. */
  private armedFor = 0;
  private count = 0;
  /** While due entries run: the timer is armed after them, for the first one left. */
  private firing = false;

  constructor(
    readonly delayMs: number,
    private readonly now: MonotonicNow = () => performance.now(),
  ) {}

  /** Entries waiting. */
  get size(): number {
    return this.count;
  }

  /** Whether the Node timer is armed. */
  get armed(): boolean {
    return this.timer !== undefined;
  }

  /** Queues `entry` to run `delayMs` from now (taken out first if it was queued). */
  add(entry: TimedEntry): void {
    if (entry.timerQueued) this.remove(entry);
    const due = this.now() + this.delayMs;
    entry.timerDue = due;
    entry.timerNext = undefined;
    entry.timerPrev = this.last;
    entry.timerQueued = true;
    if (this.last === undefined) this.first = entry;
    else this.last.timerNext = entry;
    this.last = entry;
    this.count++;
    // An armed timer waits for an entry added earlier, so due no later than this one.
    if (this.timer === undefined && !this.firing) this.arm(due, this.delayMs);
  }

  /** Takes `entry` out; nothing happens if it is not queued. */
  remove(entry: TimedEntry): void {
    if (!entry.timerQueued) return;
    const { timerPrev: prev, timerNext: next } = entry;
    if (prev === undefined) this.first = next;
    else prev.timerNext = next;
    if (next === undefined) this.last = prev;
    else next.timerPrev = prev;
    entry.timerPrev = undefined;
    entry.timerNext = undefined;
    entry.timerQueued = false;
    this.count--;
  }

  /** Stops the timer and empties the queue: no entry runs. */
  close(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    while (this.first !== undefined) this.remove(this.first);
  }

  private arm(due: number, delay: number): void {
    this.armedFor = due;
    // Whole ms, rounded up: Node drops a delay's fraction (a timer for 9.5 ms runs at 9), so
    // a timer armed for the gap after one that ran early would run early by both, and the
    // losses would add up along the queue (the heartbeat test saw a renewal 5.4 ms early).
    this.timer = setTimeout(() => this.fire(), Math.max(0, Math.ceil(delay)));
    this.timer.unref?.();
  }

  private fire(): void {
    this.timer = undefined;
    const armedFor = this.armedFor;
    let now = this.now();
    this.firing = true;
    try {
      // Due: what the timer waited for (the timers' clock said so) and what the clock says,
      // read again once an entry ran (one that fell due meanwhile runs in this batch, not a
      // timer later).
      for (let entry = this.first; entry !== undefined; entry = this.first) {
        if (entry.timerDue > armedFor && entry.timerDue > now) break;
        this.remove(entry);
        entry.onTimer();
        now = this.now();
      }
    } finally {
      this.firing = false;
      const next = this.first;
      if (next !== undefined)
        this.arm(next.timerDue, Math.min(next.timerDue - armedFor, next.timerDue - now));
    }
  }
}
