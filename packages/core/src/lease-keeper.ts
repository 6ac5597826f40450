import { LeaseLostError } from './errors.js';
import type { ExecutionSettings } from './execution.js';
import type { ExecutionReport } from './execution-report.js';
import { FixedDelayTimers, type TimedEntry } from './fixed-delay-timers.js';
import { storeCallObserver } from './observe.js';
import { callStore } from './store-call.js';

/** Where an execution is: running its operation, writing its final outcome, or done. */
export type ExecutionPhase = 'running' | 'finishing' | 'done';

/**
 * Keeps one acquisition's lease: renews it with heartbeats (never past `maxHoldMs`) and
 * aborts `signal` with `LeaseLostError` when a renewal finds another owner, when renewals
 * keep failing until the lease estimate passes, or when the maximum hold passes.
 *
 * Renewals go on while the final write is retried (`finishing`): the lease is what keeps a
 * retry from running the operation again meanwhile.
 *
 * Cheap for the common execution that ends long before its first heartbeat: no timer of its
 * own (the heartbeat waits in the engine's {@link FixedDelayTimers}, one Node timer for all
 * its executions), and the abort controller is created only when somebody reads `signal` or
 * the lease is lost. The watchdog that aborts at the lease estimate is armed with the first
 * heartbeat (always due before the lease passes: heartbeats are shorter than the lease),
 * when there are no heartbeats, or when renewals stop (`abandon`). A renewal retried after a
 * failure (a fifth of the interval) has a timer of its own. A first heartbeat that runs past
 * the lease estimate (the event loop was held up) renews before anything is called lost: only
 * another owner, a failed renewal or one not answered within a fifth of the heartbeat (at most
 * `storeTimeoutMs`) loses the lease then.
 */
export class LeaseKeeper implements TimedEntry {
  phase: ExecutionPhase = 'running';
  /** The request's operation and the acquisition's fence, for events. */
  operation: string | undefined;
  fence: number | undefined;
  private controller: AbortController | undefined;
  private abandoned = false;
  private leaseEstimate: number;
  /** A renewal retried after a failure (the regular ones wait in `heartbeats`). */
  private heartbeatTimer: ReturnType<typeof setTimeout> | undefined;
  private watchdogTimer: ReturnType<typeof setTimeout> | undefined;
  private readonly heartbeats: FixedDelayTimers | undefined;
  // The regular heartbeat's place in `heartbeats` (see TimedEntry).
  timerDue = 0;
  timerPrev: TimedEntry | undefined = undefined;
  timerNext: TimedEntry | undefined = undefined;
  timerQueued = false;

  constructor(
    private readonly settings: ExecutionSettings,
    private readonly key: string,
    private readonly owner: string,
    private readonly acquiredAt: number,
    /** Told when the lease is lost (the execution's events; none when nobody listens). */
    private readonly report: ExecutionReport | undefined,
    heartbeats?: FixedDelayTimers,
    /** How long the acquisition took to answer, `acquiredAt` to now (see `scheduleHeartbeat`). */
    roundTrip = 0,
  ) {
    // The store started the lease no earlier than the call was sent: a safe lower bound.
    this.leaseEstimate = acquiredAt + settings.leaseMs;
    const { heartbeatMs } = settings;
    if (heartbeatMs === false) {
      this.heartbeats = undefined;
      this.armWatchdog();
    } else {
      // The engine's shared queue when it is for this interval, else one of its own.
      this.heartbeats =
        heartbeats?.delayMs === heartbeatMs ? heartbeats : new FixedDelayTimers(heartbeatMs);
      this.scheduleHeartbeat(false, roundTrip);
    }
  }

  /** The regular heartbeat is due (called by `heartbeats`). */
  onTimer(): void {
    void this.beat();
  }

  /** Aborts when the lease is lost (or may have been). */
  get signal(): AbortSignal {
    this.controller ??= new AbortController();
    return this.controller.signal;
  }

  /** Stops renewing; the lease runs out by itself (the watchdog still aborts the signal). */
  abandon(): void {
    this.abandoned = true;
    this.cancelHeartbeat();
    if (this.phase !== 'done' && this.watchdogTimer === undefined) this.armWatchdog();
  }

  /** The final write settled or was given up: no more renewals, no watchdog. */
  stop(): void {
    this.phase = 'done';
    this.cancelHeartbeat();
    clearTimeout(this.watchdogTimer);
  }

  private cancelHeartbeat(): void {
    this.heartbeats?.remove(this);
    clearTimeout(this.heartbeatTimer);
  }

  // A method, not a field read: the phase changes while a renewal is awaited.
  private isDone(): boolean {
    return this.phase === 'done';
  }

  private get lost(): boolean {
    return this.controller?.signal.aborted === true;
  }

  private lose(phase: 'heartbeat' | 'max_hold', message: string): void {
    if (this.lost) return;
    this.report?.leaseLost(phase);
    this.controller ??= new AbortController();
    this.controller.abort(new LeaseLostError(message));
  }

  private armWatchdog(): void {
    clearTimeout(this.watchdogTimer);
    const delay = Math.max(0, this.leaseEstimate - this.settings.clock.now());
    this.watchdogTimer = setTimeout(() => this.expire(), delay);
    this.watchdogTimer.unref?.();
  }

  /** The lease estimate passed without a renewal. */
  private expire(): void {
    if (this.isDone()) return;
    // The estimate that passed was the one cut to the maximum hold (or the clock is past it).
    // Not the clock alone: a timer may run a millisecond before `clock.now()` reaches the
    // estimate it was armed for (Node counts on its own clock, truncated differently), and a
    // maximum hold read as a lost heartbeat is not enforced (the transactional engine ends
    // the business transaction only for `max_hold`).
    const holdEnd = this.acquiredAt + this.settings.maxHoldMs;
    const holdPassed = this.leaseEstimate >= holdEnd || this.settings.clock.now() >= holdEnd;
    this.lose(
      holdPassed ? 'max_hold' : 'heartbeat',
      holdPassed
        ? 'The maximum hold time passed; the lease was not renewed'
        : 'The lease could not be renewed before it passed',
    );
  }

  /**
   * The next renewal: one heartbeat after the last call that renewed the lease was sent
   * (`roundTrip`: how long ago that was, the call's round trip), or sooner after a failed one
   * (a fifth of the interval, at least 10 ms), so a store that drops a renewal or two (a
   * connection reset, a short outage) still gets several tries before the lease passes, not
   * one.
   *
   * From the send, not from the answer: the lease estimate counts from the send, so a renewal
   * counted from the answer would be sent a whole round trip later and answered two round
   * trips past the point the estimate allows for, and on a slow link (a round trip of a third
   * of the lease, with a third of it as heartbeat) the watchdog called the lease lost while
   * the renewal that kept it was on its way (the redrev review: the key then passed to a
   * competitor, which ran the operation again). Counted from the send, a renewal lands before
   * the estimate whenever a round trip is shorter than both the lease minus the heartbeat and
   * half the lease (renewals go one at a time: one slower than the heartbeat is followed at
   * once by the next, answered two round trips after the last renewing send; the fixrev
   * review's `it.fails` in `test/fixrev-lease.test.ts` holds that bound). A short
   * round trip (under a tenth of the interval: the usual case) waits in the engine's shared
   * queue, one heartbeat from now.
   */
  private scheduleHeartbeat(failed = false, roundTrip = 0): void {
    const { heartbeatMs } = this.settings;
    if (heartbeatMs === false || this.isDone() || this.abandoned) return;
    if (!failed && !(roundTrip > heartbeatMs / 10)) {
      this.heartbeats?.add(this);
      return;
    }
    const delay = failed ? heartbeatMs / 5 : heartbeatMs - roundTrip;
    this.heartbeatTimer = setTimeout(() => void this.beat(), Math.max(10, delay));
    this.heartbeatTimer.unref?.();
  }

  private async beat(): Promise<void> {
    if (this.isDone() || this.abandoned) return;
    // While the operation runs, a lost lease ends the renewals; while its final write is
    // retried, renewing may still win the lease back if nobody took the key over.
    if (this.phase === 'running' && this.lost) return;
    const { store, clock, leaseMs, retentionMs, maxHoldMs, storeTimeoutMs, heartbeatMs } =
      this.settings;
    // The first heartbeat arms the watchdog: from now on the lease may pass while a renewal is
    // awaited. One that runs late, past the lease estimate (this process's event loop was
    // held up longer than the lease: a long poll phase under load, a synchronous stretch),
    // asks the store before calling the lease lost: the renewal is owner-checked, so if it
    // lands nobody took the key over meanwhile and the execution still holds it. Declaring it
    // lost without asking aborted operations whose lease nobody took, and a caller that then
    // released the key let a retry run the operation a second time (seen in the chaos suite's
    // memory-1mib row under load). That renewal gets a short grace, the retry interval of a
    // failed one (a fifth of the heartbeat, at most `storeTimeoutMs`): past it the lease is
    // lost, so an execution whose store does not answer at once never runs on for long beside
    // an owner that took the key over meanwhile. A failure or another owner loses it too.
    // The same holds for every later heartbeat the loop ran late (the watchdog, due at the
    // estimate, would run right after it in the same timers phase, before any store could
    // answer) and for one that runs just before the estimate (the watchdog would fire a few
    // ms later, before the renewal can land): whenever the watchdog would fire within the
    // grace, it is moved to the end of the grace, never earlier than the estimate.
    const grace = Math.min(storeTimeoutMs, Math.max(10, (heartbeatMs || 0) / 5));
    const now = clock.now();
    const late = now >= this.leaseEstimate;
    // Never past the maximum hold: no renewal can reach beyond it, so a grace there buys
    // nothing and would only let the operation run on past its bound.
    if (now + grace >= this.leaseEstimate) {
      clearTimeout(this.watchdogTimer);
      const holdLeft = this.acquiredAt + maxHoldMs - now;
      const delay = Math.max(0, Math.min(Math.max(grace, this.leaseEstimate - now), holdLeft));
      this.watchdogTimer = setTimeout(() => this.expire(), delay);
      this.watchdogTimer.unref?.();
    } else if (this.watchdogTimer === undefined) this.armWatchdog();
    const startedAt = clock.now();
    const timedFrom = this.settings.observed ? performance.now() : 0;
    // Never renew past the maximum hold: the last renewal is cut to what is left of it.
    const lease = Math.min(leaseMs, this.acquiredAt + maxHoldMs - startedAt);
    if (lease <= 0) {
      if (late) this.expire();
      return; // let the lease lapse; the watchdog aborts
    }
    try {
      const result = await callStore(
        'extend',
        storeTimeoutMs,
        () => store.extend({ key: this.key, owner: this.owner, leaseMs: lease, retentionMs }),
        { observe: storeCallObserver(this.settings, 'extend', this.key, this.operation) },
      );
      if (this.isDone()) return;
      if (!result.ok) {
        // While finishing, not_owner may mean our own complete just landed: the final
        // write tells which.
        if (this.phase === 'running')
          this.lose('heartbeat', 'Another execution took this key over');
        else if (late) this.expire();
        return;
      }
      this.leaseEstimate = startedAt + lease;
      this.armWatchdog();
      this.scheduleHeartbeat(false, clock.now() - startedAt);
      return;
    } catch (error) {
      if (this.isDone()) return;
      // A late first renewal that failed: the lease passed without one.
      if (late) {
        this.expire();
        this.armWatchdog();
      }
      if (this.settings.observed)
        this.settings.emit({
          type: 'store_error',
          storageKey: this.key,
          operation: this.operation,
          method: 'extend',
          fence: this.fence,
          error,
          durationMs: performance.now() - timedFrom,
        });
      this.scheduleHeartbeat(true);
    }
  }
}
