/**
 * The work the server still has to finish: every request until its outcome is recorded,
 * including bodies still being produced for a client that went away. Shutdown waits for it.
 */
export class InFlight {
  private readonly pending = new Set<Promise<unknown>>();
  private readonly waiters = new Set<() => void>();

  /** How many pieces of work are running. */
  get size(): number {
    return this.pending.size;
  }

  /** Tracks `work` until it settles; returns it unchanged. */
  track<T>(work: Promise<T>): Promise<T> {
    this.pending.add(work);
    const done = () => {
      this.pending.delete(work);
      if (this.pending.size === 0) for (const wake of this.waiters) wake();
    };
    work.then(done, done);
    return work;
  }

  /** Resolves `true` once nothing is running, or `false` when `timeoutMs` passed first. */
  idle(timeoutMs: number): Promise<boolean> {
    if (this.pending.size === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.waiters.delete(wake);
        resolve(true);
      };
      const timer = setTimeout(() => {
        this.waiters.delete(wake);
        resolve(false);
      }, timeoutMs);
      this.waiters.add(wake);
    });
  }
}
