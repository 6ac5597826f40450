/**
 * Work an engine goes on with after the caller got its answer (a final write retried until
 * the store comes back). A server waits for it at shutdown with `drain`.
 */
import { MAX_TIMER_MS } from './adapter-kit/input-checks.js';

export class BackgroundTasks {
  private readonly pending = new Set<Promise<unknown>>();
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
    return this.pending.size;
  }

  /** Tracks `task` until it settles. Its rejection is the task's own business (reported by events). */
  track(task: Promise<unknown>): void {
    const settled: Promise<unknown> = task.then(
      () => this.pending.delete(settled),
      () => this.pending.delete(settled),
    );
    this.pending.add(settled);
  }

  /** Resolves when no task is pending or `timeoutMs` passed; returns how many are left. */
  async drain(timeoutMs: number): Promise<number> {
    this.drainsStarted++;
    for (const wake of this.wakers) wake();
    this.wakers.clear();
    const deadline = performance.now() + timeoutMs;
    while (this.pending.size > 0) {
      const left = deadline - performance.now();
      if (left <= 0) break;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<void>((resolve) => {
        // Node fires a longer timer at once (and warns): a longer wait is armed again.
        timer = setTimeout(resolve, Math.min(left, MAX_TIMER_MS));
      });
      await Promise.race([Promise.all(this.pending), timeout]);
      clearTimeout(timer);
    }
    return this.pending.size;
  }
}
