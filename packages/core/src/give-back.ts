import type { BackgroundTasks } from './background.js';
import { elapsedClock, monotonicClock } from './clock.js';
import { StoreUnavailableError } from './errors.js';
import { storeCallObserver } from './observe.js';
import type { ResolvedSettings } from './settings.js';
import type { AcquireResult } from './store.js';
import { retryStoreCall } from './store-retry.js';

/**
 * Most acquisitions given back at once after failed acquires. During an outage every
 * request fails its acquire; past this many, a possible phantom acquisition is left to run
 * out with its lease rather than multiplying the load on a store that is coming back.
 */
export const MAX_PENDING_GIVE_BACKS = 64;

/** The first pause before a give-back looks again for an acquire that may land late. */
const RECHECK_FIRST_MS = 500;

/**
 * How `call` settled within `ms` (on an unref'd timer): `{ answer }` (undefined when it
 * failed), or undefined when it is still pending.
 */
async function settledWithin<R>(
  call: Promise<R>,
  ms: number,
): Promise<{ answer: R | undefined; unsent?: boolean } | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<undefined>((resolve) => {
    // Within Node's timer range (a longer delay fires after 1 ms): a store time limit near
    // 2^31 ms still waits, not gives back at once.
    const started = setTimeout(() => resolve(undefined), Math.min(Math.max(0, ms), 2 ** 31 - 1));
    started.unref?.();
    timer = started;
  });
  try {
    return await Promise.race([
      call.then(
        (answer) => ({ answer }),
        // A call the store (or an admission queue it waited in) says it never sent.
        (error: unknown) => ({
          answer: undefined,
          unsent: error instanceof StoreUnavailableError && error.unsent,
        }),
      ),
      timeout,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Gives back acquisitions whose acquire failed but may have been applied (its answer lost,
 * a timeout): such a record would hold the key for a whole lease.
 * @internal
 */
export class GiveBacks {
  private pending = 0;

  constructor(
    private readonly settings: ResolvedSettings,
    private readonly tasks: BackgroundTasks,
  ) {}

  /**
   * Releases the record `owner` may hold, with the same owner token, retried until the lease
   * it could hold has passed. Owner-checked, so it never touches anyone else's record. At
   * most {@link MAX_PENDING_GIVE_BACKS} at once (tracked as background work, which a drain of
   * final writes only does not wait for).
   *
   * A timed-out acquire may still be on its way: a release sent before it lands finds
   * nothing, and the acquire then holds the key after all. So the give-back first waits for
   * the abandoned `call` to settle (for a lease and a store time limit from its send), and
   * skips the release when its late answer says nothing was acquired (one still unanswered
   * then is released anyway: harmless if it never lands). The store may have applied the
   * acquire as late as it answered, so the lease it could hold counts from that answer: the
   * release is retried until a lease from then has passed (an acquire refused for answering
   * too late in its lease is given back too, though the lease counted from its send has
   * passed). A call that failed (its time limit) may still land after a release that found
   * nothing: then the release is sent again, with doubling pauses, until a lease from the
   * first one has passed, unless a drain starts.
   *
   * With an injected clock the wait for the call and the looking again are bounded by elapsed
   * time too (the earlier end is taken, as the lease keeper does): when a late acquire lands
   * is a matter of real time, whatever the clock reads (the rv21 review: a `ManualClock` that
   * stands still kept the looking again going, a release every lease/4, for as long as the
   * process ran, and held one of the give-back slots for good). The release retried while the
   * store fails stays on the injected clock as given: the acquisition may have landed, and for
   * a store on that clock its lease is live until that clock passes it.
   */
  releaseIfApplied(
    storageKey: string,
    operation: string | undefined,
    owner: string,
    /** When the acquire was sent, on the engine's clock for durations (`elapsedClock`). */
    callStartedAt: number,
    call: Promise<AcquireResult> | undefined,
    /** The same on {@link monotonicClock}, with an injected clock (see above). */
    callStartedAtMono?: number,
  ): void {
    if (this.pending >= MAX_PENDING_GIVE_BACKS) return;
    const { store, storeTimeoutMs, retentionMs, leaseMs } = this.settings;
    const clock = elapsedClock(this.settings.clock);
    // Elapsed time beside an injected clock (none for the default one, which is that clock).
    const mono = clock === monotonicClock ? undefined : monotonicClock;
    this.pending++;
    // Drains started from here on end the looking again (one started while the give-back
    // waits for the acquire to settle, too).
    const drains = this.tasks.drains;
    const giveBack = (async () => {
      // Whether the acquisition is known to have landed: it answered `acquired` (too late),
      // or there is no acquire call (an acquisition whose own release failed: it existed,
      // so a release that finds nothing means that one was applied).
      let landed = call === undefined;
      if (call) {
        const wait = leaseMs + storeTimeoutMs;
        const late = await settledWithin(
          call,
          mono === undefined || callStartedAtMono === undefined
            ? callStartedAt + wait - clock.now()
            : Math.min(callStartedAt + wait - clock.now(), callStartedAtMono + wait - mono.now()),
        );
        // Found a record, or never sent (it gave up in an admission queue when core stopped
        // waiting for it): nothing of this owner's to give back, no release for the store.
        if (late?.answer?.kind === 'found' || late?.unsent) return;
        landed = late?.answer?.kind === 'acquired';
      }
      const deadline = clock.now() + leaseMs;
      const monoDeadline = mono === undefined ? 0 : mono.now() + leaseMs;
      const observe = storeCallObserver(this.settings, 'release', storageKey, operation);
      let pause = Math.max(1, Math.min(RECHECK_FIRST_MS, leaseMs / 4));
      for (;;) {
        const released = await retryStoreCall(
          { operation: 'release', timeoutMs: storeTimeoutMs, clock, deadline, observe },
          (context) => store.release({ key: storageKey, owner, retentionMs }, context),
        );
        if (released.ok || landed) return;
        // Nothing held under this owner yet. The acquire's own call failing (its time limit)
        // does not mean the store dropped it: a server that went silent with the statement
        // read (a frozen PostgreSQL backend, a paused Redis) applies it when it resumes, after
        // this release, and the phantom would answer IN_PROGRESS for a whole lease. Looked
        // for again, with doubling pauses, until a lease from the first release has passed;
        // not once a drain started (a shutdown leaves a late phantom to its lease, as before).
        if (
          this.tasks.drains !== drains ||
          clock.now() + pause >= deadline ||
          (mono !== undefined && mono.now() + pause >= monoDeadline)
        )
          return;
        if (!(await this.tasks.pause(pause))) return;
        pause = Math.min(pause * 2, Math.max(1, leaseMs / 4));
      }
    })().finally(() => this.pending--);
    this.tasks.trackGiveBack(giveBack);
  }
}
