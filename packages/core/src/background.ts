/**
 * Work an engine goes on with after the caller got its answer (a final write retried until
 * the store comes back). A server waits for it at shutdown with `drain`.
 */
import { MAX_TIMER_MS } from './adapter-kit/input-checks.js';

export class BackgroundTasks {
  /**
   * Tasks not settled yet: a count, not a set of them. A `Set` that every execution added to
   * and deleted from allocated a new table on most deletes (V8 shrinks it when it empties):
   * about 150 B an execution on the Redis store, kept past a scavenge (V8's sampling heap
   * profiler, benchmarks/HISTORY.md, twentieth pass). A count allocates nothing.
   */
  private pending = 0;
  /**
   * Of {@link pending}, the final writes (an outcome kept for a store that failed): what a
   * drain of `finalWritesOnly` waits for. The rest are give-backs (see {@link trackGiveBack}).
   */
  private pendingWrites = 0;
  /** Resolves the drains waiting for {@link pending} to reach 0. */
  private idle: (() => void)[] = [];
  /** Resolves the drains waiting for {@link pendingWrites} to reach 0. */
  private writesIdle: (() => void)[] = [];
  /** Ends the pauses of optional work (see {@link pause}) when a drain starts. */
  private readonly wakers = new Set<() => void>();
  private drainsStarted = 0;

  /** How many drains have started: optional work started before one stops. */
  get drains(): number {
    return this.drainsStarted;
  }

  /**
   * Waits `ms` on an unref'd timer for work that is only worth doing while the engine serves
   * (a give-back looking again for an acquire that may land late): resolves `true` then, or
   * `false` at once when a drain starts meanwhile, so a shutdown does not wait for it.
   */
  pause(ms: number): Promise<boolean> {
    return new Promise<boolean>((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        resolve(false);
      };
      const timer = setTimeout(
        () => {
          this.wakers.delete(wake);
          resolve(true);
        },
        Math.min(Math.max(0, ms), MAX_TIMER_MS),
      );
      (timer as { unref?: () => void }).unref?.();
      this.wakers.add(wake);
    });
  }

  /** How many tasks have not settled yet. */
  get size(): number {
    return this.pending;
  }

  /**
   * Tracks a final write until it settles (an outcome whose loss would let the operation run
   * again). Its rejection is the task's own business (reported by events).
   */
  track(task: Promise<unknown>): void {
    this.pending++;
    this.pendingWrites++;
    task.then(this.writeSettled, this.writeSettled);
  }

  /**
   * Tracks a give-back until it settles: the release of a key whose operation never ran (an
   * acquire that failed, an acquisition refused too late in its lease). Cut short, it leaves
   * that key to its lease (a retry waits, never runs twice): a drain of `finalWritesOnly`
   * does not wait for it.
   */
  trackGiveBack(task: Promise<unknown>): void {
    this.pending++;
    task.then(this.settled, this.settled);
  }

  private readonly writeSettled = (): void => {
    if (--this.pendingWrites === 0 && this.writesIdle.length > 0) {
      const idle = this.writesIdle;
      this.writesIdle = [];
      for (const resolve of idle) resolve();
    }
    this.settled();
  };

  private readonly settled = (): void => {
    if (--this.pending > 0 || this.idle.length === 0) return;
    const idle = this.idle;
    this.idle = [];
    for (const resolve of idle) resolve();
  };

  /**
   * Resolves when no task is pending (with `finalWritesOnly`: no final write) or `timeoutMs`
   * passed; returns how many of those are left.
   */
  async drain(timeoutMs: number, finalWritesOnly = false): Promise<number> {
    this.drainsStarted++;
    for (const wake of this.wakers) wake();
    this.wakers.clear();
    const deadline = performance.now() + timeoutMs;
    const left = () => (finalWritesOnly ? this.pendingWrites : this.pending);
    while (left() > 0) {
      const ms = deadline - performance.now();
      if (ms <= 0) break;
      const waits = finalWritesOnly ? this.writesIdle : this.idle;
      let timer: ReturnType<typeof setTimeout> | undefined;
      let done: (() => void) | undefined;
      await new Promise<void>((resolve) => {
        done = resolve;
        waits.push(resolve);
        // Node fires a longer timer at once (and warns): a longer wait is armed again.
        timer = setTimeout(resolve, Math.min(ms, MAX_TIMER_MS));
      });
      clearTimeout(timer);
      // A wait the timer ended is no longer one to resolve (the list may have been swapped
      // for a new one meanwhile: the current one is searched).
      const current = finalWritesOnly ? this.writesIdle : this.idle;
      const at = current.indexOf(done as () => void);
      if (at >= 0) current.splice(at, 1);
    }
    return left();
  }
}
