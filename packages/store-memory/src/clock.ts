import { type Clock, systemClock } from '@idem/core';

// `performance.timeOrigin`, read again only when `performance` is another object (a test's
// fake timers swap it): one identity check a reading, nothing allocated.
let originOf: Performance | undefined;
let origin = 0;

/**
 * A monotonic clock in epoch-like milliseconds: `performance.timeOrigin + performance.now()`,
 * the time base core's engine measures its leases on with the default clock. It reads
 * `Date.now()` (to within a millisecond) until the wall clock is stepped or slewed, and never
 * follows a step. Where `timeOrigin` is missing it is anchored at its first reading.
 */
const monotonicClock: Clock = {
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
 * The store's clock for `clock` (the option): with the default (`systemClock`, given or not)
 * a monotonic one, for leases and retention alike; an injected clock as given.
 *
 * Leases: the engine in the same process counts its lease estimate and watchdog on elapsed
 * time; a store on the wall clock handed the key to a competitor at a forward step while the
 * first execution's signal was not aborted (the leaserev2 review). Retention: a forward step
 * would drop completed records early (a retry inside the retention would run the operation
 * again); on elapsed time a record is replayed for exactly its retention. The records live
 * only as long as this process, so no deadline has to agree with another machine's wall
 * clock: the deadlines the store reports (`leaseUntil`, `expiresAt`, `now`) are on this
 * clock, epoch-like, off from `Date.now()` by the steps since the process started.
 */
export function storeClock(clock: Clock | undefined): Clock {
  return clock === undefined || clock === systemClock ? monotonicClock : clock;
}
