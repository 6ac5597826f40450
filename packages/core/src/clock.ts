/** A source of the current time in epoch milliseconds. Injectable for tests. */
export interface Clock {
  now(): number;
}

/** The system clock (`Date.now`). */
export const systemClock: Clock = { now: () => Date.now() };

/**
 * A clock that moves only when told to; for tests of leases and retention without real
 * waiting.
 */
export class ManualClock implements Clock {
  private current: number;

  constructor(start = Date.UTC(2026, 0, 1)) {
    this.current = start;
  }

  now(): number {
    return this.current;
  }

  /** Moves the clock forward by `ms` milliseconds. */
  advance(ms: number): void {
    if (!(ms >= 0)) throw new RangeError('A clock only moves forward');
    this.current += ms;
  }

  /** Sets the clock to `epochMs` (not backwards). */
  set(epochMs: number): void {
    if (epochMs < this.current) throw new RangeError('A clock only moves forward');
    this.current = epochMs;
  }
}
