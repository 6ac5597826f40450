import { invalidRangeInput, shownValue } from './errors.js';

/** A source of the current time in epoch milliseconds. Injectable for tests. */
export interface Clock {
  now(): number;
}

/**
 * Mark of {@link systemClock}, registered globally (`Symbol.for`) so that the system clock of
 * another copy of `@idem/core` in the process (the CommonJS build beside the ES module one, or
 * two installed versions) is recognised as the system clock too.
 */
const SYSTEM_CLOCK = Symbol.for('@idem/core.systemClock');

/** The system clock (`Date.now`). */
export const systemClock: Clock = Object.defineProperty({ now: () => Date.now() }, SYSTEM_CLOCK, {
  value: true,
});

/** Whether `clock` carries `mark` (own or inherited). */
function marked(clock: Clock, mark: symbol): boolean {
  return (
    (typeof clock === 'object' || typeof clock === 'function') &&
    clock !== null &&
    (clock as unknown as Record<symbol, unknown>)[mark] === true
  );
}

/** Whether `clock` is the system clock of this or another copy of `@idem/core`. */
function isSystemClock(clock: Clock): boolean {
  return clock === systemClock || marked(clock, SYSTEM_CLOCK);
}

// `performance.timeOrigin`, read again only when `performance` is another object (a test's
// fake timers swap it): one identity check a reading, nothing allocated.
let originOf: Performance | undefined;
let origin = 0;

/**
 * A monotonic clock in epoch-like milliseconds: `performance.timeOrigin + performance.now()`.
 * It reads `Date.now()` (to within a millisecond) until the wall clock is stepped or slewed,
 * and never follows a step (NTP, an operator, a VM resumed): durations measured on it are
 * elapsed time. Where `timeOrigin` is missing it is anchored at its first reading.
 * @internal
 */
export const monotonicClock: Clock = {
  now: () => {
    const clock = performance;
    if (clock !== originOf) {
      originOf = clock;
      const given = clock.timeOrigin;
      origin = typeof given === 'number' && given > 0 ? given : Date.now() - clock.now();
    }
    return origin + clock.now();
  },
};

/**
 * The clock the engine measures its durations on (the acquisition's send, the lease estimate,
 * heartbeats, the watchdog, `maxHoldMs`, the final write's and a give-back's deadlines):
 * {@link monotonicClock} for the default {@link systemClock} (any copy's), an injected clock as given. A
 * store that keeps its own leases in this process (the memory store) judges them on it too, so
 * that the store and the engine count a lease alike when the wall clock is stepped.
 */
export function elapsedClock(clock: Clock): Clock {
  return isSystemClock(clock) ? monotonicClock : clock;
}

/**
 * Mark of {@link ManualClock} (on its prototype: subclasses carry it), registered globally
 * like {@link systemClock}'s so that another copy's ManualClock is recognised too.
 */
const MANUAL_CLOCK = Symbol.for('@idem/core.manualClock');

/**
 * Whether `clock` is a {@link ManualClock} (of any copy of `@idem/core`, or a subclass): one
 * that moves only when told to, whose reading decides expiry however much real time passed.
 * Every other clock follows real time but for a step (the system clock, an injected wall clock
 * such as a time service's), so a store that keeps leases may count a renewal on elapsed time
 * when such a clock reads behind it.
 */
export function isManualClock(clock: Clock): boolean {
  return marked(clock, MANUAL_CLOCK);
}

/**
 * A clock that moves only when told to; for tests of leases and retention without real
 * waiting. Stores recognise it ({@link isManualClock}): its own reading decides expiry.
 */
export class ManualClock implements Clock {
  private current: number;

  constructor(start = Date.UTC(2026, 0, 1)) {
    if (!(typeof start === 'number' && Number.isFinite(start)))
      throw invalidRangeInput(`A clock starts at a finite epoch ms (got ${shownValue(start)})`);
    this.current = start;
  }

  now(): number {
    return this.current;
  }

  /**
   * Moves the clock forward by `ms` milliseconds (a finite, non-negative number).
   * @throws InvalidInputError, also a `RangeError`, for anything else
   */
  advance(ms: number): void {
    if (!(typeof ms === 'number' && ms >= 0 && Number.isFinite(this.current + ms)))
      throw invalidRangeInput(
        `A clock only moves forward, by a finite number of ms (got ${shownValue(ms)})`,
      );
    this.current += ms;
  }

  /**
   * Sets the clock to `epochMs` (a finite number, not backwards).
   * @throws InvalidInputError, also a `RangeError`, for anything else
   */
  set(epochMs: number): void {
    if (!(typeof epochMs === 'number' && Number.isFinite(epochMs) && epochMs >= this.current))
      throw invalidRangeInput(
        `A clock only moves forward, to a finite epoch ms (got ${shownValue(epochMs)})`,
      );
    this.current = epochMs;
  }
}
Object.defineProperty(ManualClock.prototype, MANUAL_CLOCK, { value: true });
