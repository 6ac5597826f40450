import type { BackgroundTasks } from './background.js';
import { elapsedClock } from './clock.js';
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

/**
 * How `call` settled within `ms` (on an unref'd timer): `{ answer }` (undefined when it
 * failed), or undefined when it is still pending.
 */
async function settledWithin<R>(
  call: Promise<R>,
  ms: number,
): Promise<{ answer: R | undefined } | undefined> {
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
        () => ({ answer: undefined }),
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
   * most {@link MAX_PENDING_GIVE_BACKS} at once (tracked as background work).
   *
   * A timed-out acquire may still be on its way: a release sent before it lands finds
   * nothing, and the acquire then holds the key after all. So the give-back first waits for
   * the abandoned `call` to settle (for a lease and a store time limit from its send), and
   * skips the release when its late answer says nothing was acquired (one still unanswered
   * then is released anyway: harmless if it never lands). The store may have applied the
   * acquire as late as it answered, so the lease it could hold counts from that answer: the
   * release is retried until a lease from then has passed (an acquire refused for answering
   * too late in its lease is given back too, though the lease counted from its send has
   * passed).
   */
  releaseIfApplied(
    storageKey: string,
    operation: string | undefined,
    owner: string,
    /** When the acquire was sent, on the engine's clock for durations (`elapsedClock`). */
    callStartedAt: number,
    call: Promise<AcquireResult> | undefined,
  ): void {
    if (this.pending >= MAX_PENDING_GIVE_BACKS) return;
    const { store, storeTimeoutMs, retentionMs, leaseMs } = this.settings;
    const clock = elapsedClock(this.settings.clock);
    this.pending++;
    const giveBack = (async () => {
      if (call) {
        const late = await settledWithin(
          call,
          callStartedAt + leaseMs + storeTimeoutMs - clock.now(),
        );
        if (late?.answer?.kind === 'found') return;
      }
      const deadline = clock.now() + leaseMs;
      await retryStoreCall(
        {
          operation: 'release',
          timeoutMs: storeTimeoutMs,
          clock,
          deadline,
          observe: storeCallObserver(this.settings, 'release', storageKey, operation),
        },
        () => store.release({ key: storageKey, owner, retentionMs }),
      );
    })().finally(() => this.pending--);
    this.tasks.track(giveBack);
  }
}
