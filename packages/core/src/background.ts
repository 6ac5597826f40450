/**
 * Work an engine goes on with after the caller got its answer (a final write retried until
 * the store comes back). A server waits for it at shutdown with `drain`.
 */
import { MAX_TIMER_MS } from './adapter-kit/input-checks.js';

export class BackgroundTasks {
  private readonly pending = new Set<Promise<unknown>>();

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
