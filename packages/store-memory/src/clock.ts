import { type Clock, elapsedClock, systemClock } from '@idem/core';

/**
 * The store's clock for `clock` (the option): with the default (`systemClock`, given or not)
 * core's monotonic clock (`elapsedClock`: `performance.timeOrigin + performance.now()`, the
 * time base core's engine measures its leases on with the default clock), for leases and
 * retention alike; an injected clock as given.
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
  return elapsedClock(clock ?? systemClock);
}
