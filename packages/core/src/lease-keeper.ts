import { type Clock, elapsedClock, monotonicClock } from './clock.js';
import { LeaseLostError } from './errors.js';
import type { ExecutionSettings } from './execution.js';
import type { ExecutionReport } from './execution-report.js';
import { FixedDelayTimers, type TimedEntry } from './fixed-delay-timers.js';
import { storeCallObserver } from './observe.js';
import type { OwnerWriteResult, StoreCallContext } from './store.js';
import { callStore } from './store-call.js';

/** Where an execution is: running its operation, writing its final outcome, or done. */
export type ExecutionPhase = 'running' | 'finishing' | 'done';

/**
 * What the keeper takes off every lease it counts from a send: a store that reads its clock in
 * whole ms, rounded down (`readClock`; Redis's `TIME` and PostgreSQL's `clock_timestamp()` to
 * whole ms; DynamoDB's client clock), writes a deadline up to 1 ms short of its reading plus
 * the lease, so the lease can end that much before send + lease (the rev33e review: another
 * owner could take the key over in that last sub-ms while the watchdog had not fired). Allowed
 * here, once, for every store (a contributor's too).
 */
export const STORE_CLOCK_ALLOWANCE_MS = 1;

/**
 * The runway of a `leaseMs` lease: how long after its send an acquisition may still be used
 * (a tenth of the lease, at most 1 s, before its end), never past the lease estimate (the
 * allowance above): for a lease under 10 ms a tenth is less than the allowance, and an
 * acquisition answered between the estimate and a tenth before the end was used with the
 * store's lease possibly past (the rev34e review: a second caller took the key over beside a
 * live signal).
 */
export function leaseRunway(leaseMs: number): number {
  return leaseMs - Math.max(Math.min(leaseMs / 10, 1_000), STORE_CLOCK_ALLOWANCE_MS);
}

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
 * heartbeat (usually due well before the lease passes), at once when that heartbeat is due
 * only at or past the estimate (an acquisition answered late in its lease), when there are
 * no heartbeats, or when renewals stop (`abandon`). A renewal retried after a
 * failure (a fifth of the interval), and a first one after a slow acquisition (or made
 * late after its answer), have a timer of their own.
 *
 * A renewal is due one heartbeat after the previous renewing call was SENT, answered or not:
 * the lease estimate counts from the send (the store started the lease no earlier), so a
 * renewal counted from the answer would be sent a whole round trip later and answered two
 * round trips past the point the estimate allows for (the redrev review: on a slow link the
 * watchdog called the lease lost while the renewal that kept it was on its way, and the key
 * passed to a competitor, which ran the operation again). Renewals that go one at a time have
 * the same flaw one step later (the fixrev review: a round trip slower than the heartbeat was
 * followed by the next send only at its answer, answered two round trips after the previous
 * renewing send). So the next renewal is queued when one is sent and goes out on time even
 * while that one is in flight, with at most two outstanding at the store: a renewal due while
 * two `store.extend` calls are unsettled (answered or failed at the store; one the keeper gave
 * up on after `storeTimeoutMs` still counts until it settles) is sent when one of them settles. The estimate is the send of the newest (by send
 * order) renewal that landed plus the lease it granted: the maximum over landed renewals on a
 * clock that does not step back, and answers out of order never move it back. With a steady
 * round trip `r` every renewal then lands before the estimate whenever `r` is shorter than
 * both `leaseMs - heartbeatMs` and `(leaseMs + heartbeatMs) / 2` (the first bound is the
 * smaller one for the default heartbeat of a third of the lease, and any longer one): sends
 * go out a heartbeat apart while `r` is under two heartbeats, else in pairs, a heartbeat and
 * then `r - heartbeatMs` apart. The first renewal is the exception no schedule lifts: it cannot be
 * sent before the acquisition is answered, so the acquisition's round trip plus its own must
 * stay below the lease (on a link where every call takes `r`: `r` under half the lease).
 *
 * A store that does not answer never holds more than two renewals (one past `storeTimeoutMs`
 * counts as failed but still holds its place until the store settles it, so a store that
 * never does gets no more renewals, while running or finishing), and the lease is lost at the
 * estimate (plus the grace below when a heartbeat the event loop held up sent a renewal
 * within it; one that ran on time, such as a retried renewal, gets none). A first heartbeat that runs past the lease
 * estimate (the event loop was held up) renews before anything is called lost: only
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
  /** Renewals sent so far, and the newest of them (by send order) that landed (0: none). */
  private sent = 0;
  private landed = 0;
  /** Renewals the keeper awaits (answered or failed, a time limit passed, not yet). */
  private inFlight = 0;
  /**
   * `store.extend` calls not settled yet, whatever the keeper's time limit said: never more
   * than two. A renewal past `storeTimeoutMs` counts as failed for the keeper but may still be
   * queued at the store (a stalled connection): it stays counted here until it settles.
   */
  private storePending = 0;
  /**
   * A renewal came due while two were outstanding at the store: it goes out when one of them
   * settles (never, if the store never settles them: the lease then passes by the estimate).
   */
  private due = false;
  /** The held-back renewal (`due`) came from a heartbeat the event loop held up (see `beat`). */
  private dueHeldUp = false;
  /** When the renewal was held back (`due`), on the keeper's clock. */
  private dueSince = 0;
  /**
   * When the armed heartbeat (queued or on its own timer) is due, on `clock`: a heartbeat that
   * runs well after it was held up by the event loop (see `beat`).
   */
  private beatDueAt = 0;
  /**
   * The renewal a held-up heartbeat sent with a grace (0: none outstanding), and the grace's
   * end: until that renewal settles, no answer moves the watchdog earlier than that end.
   */
  private graceSeq = 0;
  private graceEnd = 0;
  /**
   * The first renewal when the acquisition was slow, or one retried after a failure (the
   * regular ones wait in `heartbeats`).
   */
  private heartbeatTimer: ReturnType<typeof setTimeout> | undefined;
  private watchdogTimer: ReturnType<typeof setTimeout> | undefined;
  private readonly heartbeats: FixedDelayTimers | undefined;
  /** When the newest renewal was sent, and the lease it asks for (see `beat`). */
  private lastSentAt = 0;
  private lastLease = 0;
  /** The first heartbeat is due too close to the estimate to count on (see the constructor). */
  private firstBeatUnsure = false;
  // The regular heartbeat's place in `heartbeats` (see TimedEntry).
  timerDue = 0;
  timerPrev: TimedEntry | undefined = undefined;
  timerNext: TimedEntry | undefined = undefined;
  timerQueued = false;
  /**
   * The keeper's clock, the engine's for durations (`elapsedClock`): with the default clock
   * (`Date.now`) a monotonic one, so the estimate and the watchdog count elapsed time (a wall
   * clock stepped back while a renewal was in flight armed the watchdog that much too late:
   * the leaserev review). `acquiredAt` is read on it too, by the engine when the acquire is
   * sent (a step while the acquire was in flight moved the estimate by the step: leaserev2).
   * An injected clock is used as given (bounded by `mono`, below). (The same object for
   * every keeper: none allocated.)
   */
  private readonly clock: Clock;
  /**
   * With an injected clock, elapsed time too ({@link monotonicClock}; undefined with the
   * default clock, which is that clock already). The lease is counted on both and the earlier
   * end is taken: an injected clock stepped back while a renewal was in flight moved the
   * estimate by the step, and the watchdog fired that much past the store's lease (the
   * leaserev review, left open for injected clocks by leasefix2). One stepped forward still
   * only ends it earlier. (A `ManualClock` that does not move meanwhile counts as it did: the
   * timers that fire the watchdog count real time anyway.)
   */
  private readonly mono: Clock | undefined;
  /** On `mono`: the acquisition's send, the lease estimate and the grace's end. */
  private readonly monoAcquiredAt: number;
  private monoEstimate = 0;
  private monoGraceEnd = 0;

  constructor(
    private readonly settings: ExecutionSettings,
    private readonly key: string,
    private readonly owner: string,
    /** When the acquire was sent, on the engine's clock for durations (`elapsedClock`). */
    private readonly acquiredAt: number,
    /** Told when the lease is lost (the execution's events; none when nobody listens). */
    private readonly report: ExecutionReport | undefined,
    heartbeats?: FixedDelayTimers,
    /** How long the acquisition took to answer, `acquiredAt` to now (see `scheduleHeartbeat`). */
    roundTrip = 0,
    /**
     * When the acquire was sent on {@link monotonicClock} (with an injected clock; else
     * unused). Without it: now less the time since `acquiredAt` on the injected clock.
     */
    acquiredAtMono?: number,
  ) {
    this.clock = elapsedClock(settings.clock);
    this.mono = this.clock === monotonicClock ? undefined : monotonicClock;
    this.monoAcquiredAt =
      this.mono === undefined
        ? 0
        : (acquiredAtMono ?? this.mono.now() - Math.max(0, this.clock.now() - acquiredAt));
    // The store started the lease no earlier than the call was sent: a safe lower bound, less
    // the part of a ms a store's whole-ms clock may cut off (see STORE_CLOCK_ALLOWANCE_MS).
    this.monoEstimate = this.monoAcquiredAt + settings.leaseMs - STORE_CLOCK_ALLOWANCE_MS;
    this.leaseEstimate = acquiredAt + settings.leaseMs - STORE_CLOCK_ALLOWANCE_MS;
    const { heartbeatMs } = settings;
    if (heartbeatMs === false) {
      this.heartbeats = undefined;
      this.armWatchdog();
    } else {
      // The engine's shared queue when it is for this interval, else one of its own.
      this.heartbeats =
        heartbeats?.delayMs === heartbeatMs ? heartbeats : new FixedDelayTimers(heartbeatMs);
      this.scheduleHeartbeat(false, roundTrip);
      // A first heartbeat due at, past or just before the estimate (within what a timer may
      // run late, or within the grace a held-up heartbeat gets: an acquisition answered late
      // in its lease, a keeper made late after its answer, a heartbeat close to the lease)
      // cannot be counted on to renew before the lease may pass: the watchdog is armed now,
      // at the estimate, and that heartbeat gives it no grace (the rev3 review: the operation
      // ran on with a live signal beside a caller that took the key over at the store's
      // deadline; the latrev review: held up a little past its drift, such a heartbeat moved
      // the watchdog a grace past the estimate). `beatDueAt` is when the heartbeat will run
      // (see `scheduleHeartbeat`), not when it should have.
      // (Counted as what is left, on both clocks with an injected one: see `left`.)
      const margin = Math.max(5, heartbeatMs / 20, this.grace());
      if (this.beatDueAt - this.now() + margin >= this.left()) {
        this.firstBeatUnsure = true;
        this.armWatchdog();
      }
    }
  }

  /** The regular heartbeat is due (called by `heartbeats`). */
  onTimer(): void {
    void this.beat();
  }

  /**
   * How long past the estimate a held-up heartbeat's renewal may still land (see `beat`): the
   * retry interval of a failed renewal, a fifth of the heartbeat (at least 10 ms, at most
   * `storeTimeoutMs`).
   */
  private grace(): number {
    const { storeTimeoutMs, heartbeatMs } = this.settings;
    return Math.min(storeTimeoutMs, Math.max(10, (heartbeatMs || 0) / 5));
  }

  /** The keeper's time (see `clock`). */
  private now(): number {
    return this.clock.now();
  }

  /** Aborts when the lease is lost (or may have been). */
  get signal(): AbortSignal {
    this.controller ??= new AbortController();
    return this.controller.signal;
  }

  /**
   * Whether the operation would start too late in the lease: at or past the runway the engine
   * leaves an acquisition (a tenth of the lease, at most 1 s, before its estimate; see
   * `begin`). An event loop held up between the acquisition and the operation's start.
   */
  pastRunway(): boolean {
    const { leaseMs } = this.settings;
    const sinceSend = Math.max(
      this.now() - this.acquiredAt,
      this.mono === undefined ? 0 : this.mono.now() - this.monoAcquiredAt,
    );
    return sinceSend >= leaseRunway(leaseMs);
  }

  /** Whether `abandon` was called. */
  get isAbandoned(): boolean {
    return this.abandoned;
  }

  /** What is left of the lease estimate, in ms (0 once it passed). */
  leaseLeft(): number {
    return Math.max(0, this.left());
  }

  /**
   * What is left of the lease estimate, in ms (negative once it passed): on the keeper's
   * clock, and with an injected one never more than on elapsed time (see `mono`).
   */
  private left(): number {
    const left = this.leaseEstimate - this.now();
    return this.mono === undefined ? left : Math.min(left, this.monoEstimate - this.mono.now());
  }

  /** What is left of the maximum hold, in ms (on both clocks, as `left`). */
  private holdLeft(): number {
    const { maxHoldMs } = this.settings;
    const left = this.acquiredAt + maxHoldMs - this.now();
    return this.mono === undefined
      ? left
      : Math.min(left, this.monoAcquiredAt + maxHoldMs - this.mono.now());
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
    this.due = false;
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
    // While the operation runs, a lost lease ends the renewals (while finishing they go on).
    if (this.phase === 'running') this.cancelHeartbeat();
    this.report?.leaseLost(phase);
    this.controller ??= new AbortController();
    this.controller.abort(new LeaseLostError(message));
  }

  private armWatchdog(): void {
    clearTimeout(this.watchdogTimer);
    // Never earlier than the grace of a held-up heartbeat whose renewal is still outstanding:
    // after a stall the answer of a renewal that was in flight through it lands with an
    // estimate long passed, and re-armed at that estimate the watchdog fired at once, before
    // the late renewal (sent with its grace, answered within it) could land (the leaserev
    // review: a spurious loss of a lease nobody took).
    let delay = this.left();
    if (this.graceSeq !== 0) {
      let graceLeft = this.graceEnd - this.now();
      if (this.mono !== undefined)
        graceLeft = Math.min(graceLeft, this.monoGraceEnd - this.mono.now());
      delay = Math.max(delay, graceLeft);
    }
    delay = Math.max(0, delay);
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
    // (The estimate is the lease less the allowance: one cut to the hold ends that much before it.)
    const holdPassed =
      this.leaseEstimate + STORE_CLOCK_ALLOWANCE_MS >= holdEnd ||
      this.holdLeft() <= STORE_CLOCK_ALLOWANCE_MS;
    this.lose(
      holdPassed ? 'max_hold' : 'heartbeat',
      holdPassed
        ? 'The maximum hold time passed; the lease was not renewed'
        : 'The lease could not be renewed before it passed',
    );
  }

  /**
   * The first renewal, or one retried after a failure. The first is due one heartbeat after
   * the acquisition was sent (`roundTrip`: how long ago that was, its round trip); a retried
   * one a fifth of the interval after the failure (at least 10 ms), so a store that drops a
   * renewal or two (a connection reset, a short outage) still gets several tries before the
   * lease passes, not one. Every later regular renewal is queued by the one before it when
   * that one is sent (see `beat`). A short acquisition (under a tenth of the interval: the
   * usual case) waits in the engine's shared queue, one heartbeat from now.
   */
  private scheduleHeartbeat(failed = false, roundTrip = 0): void {
    const { heartbeatMs } = this.settings;
    if (heartbeatMs === false || this.isDone() || this.abandoned) return;
    const now = this.now();
    let delay: number;
    if (failed) delay = Math.max(10, heartbeatMs / 5);
    else {
      // The first renewal is due one heartbeat after the acquisition was sent, as the lease
      // counts. Made soon after that send (the usual case: under a tenth of the interval),
      // it waits in the shared queue, which counts a heartbeat from NOW. Made later (a slow
      // acquisition, or an event loop held up between the answer and this keeper: a `miss`
      // listener), it gets a timer of its own for what is left of the interval, at least
      // 10 ms: a queued one would run a heartbeat after that hold, possibly past the
      // estimate with nothing armed to call the lease lost (the runrev review: a listener
      // that held the loop 800 of 1000 ms left the operation a live signal 130 ms past the
      // store's deadline, 8 s with a 30 s lease).
      // With an injected clock, elapsed time too (the rv21 review: one stepped back while the
      // acquire was in flight read a slow acquisition as just sent, queued its first renewal a
      // whole heartbeat after the answer and armed no watchdog: the signal outlived the lease).
      const sinceSend = Math.max(
        roundTrip,
        now - this.acquiredAt,
        this.mono === undefined ? 0 : this.mono.now() - this.monoAcquiredAt,
      );
      if (sinceSend <= heartbeatMs / 10) {
        this.beatDueAt = now + heartbeatMs;
        this.heartbeats?.add(this);
        return;
      }
      delay = Math.max(10, heartbeatMs - sinceSend);
    }
    this.heartbeats?.remove(this);
    clearTimeout(this.heartbeatTimer);
    this.beatDueAt = now + delay;
    this.heartbeatTimer = setTimeout(() => void this.beat(), delay);
    this.heartbeatTimer.unref?.();
  }

  /** A renewal held back (`due`) goes out once fewer than two are outstanding at the store. */
  private releaseDue(): void {
    if (!this.due || this.inFlight >= 2 || this.storePending >= 2) return;
    this.due = false;
    void this.beat(true);
  }

  /** A renewal; `released`: one held back (`due`) that goes out now. */
  private async beat(released = false): Promise<void> {
    if (this.isDone() || this.abandoned) return;
    // While the operation runs, a lost lease ends the renewals; while its final write is
    // retried, renewing may still win the lease back if nobody took the key over.
    if (this.phase === 'running' && this.lost) return;
    // At most two renewals outstanding at the store, counting those whose time limit passed
    // but that the store has not settled: a third waits until one settles (never a storm
    // against a store that stops answering, running or finishing; the watchdog still fires at
    // the estimate).
    const { store, leaseMs, retentionMs, maxHoldMs, storeTimeoutMs, heartbeatMs } = this.settings;
    const grace = this.grace();
    const now = this.now();
    // Held up: the event loop ran this heartbeat later than it was due, by more than timers
    // drift (a quarter of the grace, at least 5 ms). A held-back one keeps what its beat was
    // only when released at once (an answer the same stall held up); released later, it goes
    // out on time (the leaserev2 review: a stale flag gave a renewal released just before the
    // estimate a grace past the store's deadline).
    const drift = Math.max(5, grace / 4);
    const heldUp = released
      ? this.dueHeldUp && now - this.dueSince <= drift
      : now - this.beatDueAt > drift;
    if (this.inFlight >= 2 || this.storePending >= 2) {
      this.due = true;
      this.dueHeldUp = heldUp;
      this.dueSince = now;
      return;
    }
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
    // answer) and for one the loop held up to just before the estimate (the watchdog would
    // fire a few ms later, before the renewal can land): whenever the watchdog would fire
    // within the grace, it is moved to the end of the grace, never earlier than the estimate.
    // Only then: a heartbeat that runs ON TIME near the estimate (a renewal retried after
    // failures, one held back while two were outstanding and released by an answer) keeps
    // the watchdog at the estimate. The estimate can be the store's own deadline (a renewal
    // applied the moment it was sent), and a watchdog past it let the operation run on beside
    // a competitor that acquired at that deadline (the leaserev review: up to the grace, 2 s
    // with the defaults).
    const left = this.left();
    const late = left <= 0;
    // Never past the maximum hold: no renewal can reach beyond it, so a grace there buys
    // nothing and would only let the operation run on past its bound.
    // Nor when a renewal that landed reached the hold already: the watchdog is armed at its
    // end. (Queued at the send, the next heartbeat can run just before that watchdog, on a
    // clock a millisecond behind the timers, and would push it past the hold's end.)
    const holdEnd = this.acquiredAt + maxHoldMs;
    // The end of the grace this heartbeat armed past the estimate (0: none).
    let graceEnd = 0;
    const atHold = this.landed > 0 && this.leaseEstimate + STORE_CLOCK_ALLOWANCE_MS >= holdEnd;
    // (On the injected clock only: an estimate counted from a send, as `holdEnd`.)
    // A heartbeat due late in the lease gets none, held up or not: the grace is for a stall
    // that made a heartbeat due on the regular schedule (the lease minus the heartbeat before
    // the estimate) run late, not for one that was due close to the estimate anyway (the
    // latrev review: after an acquisition answered late in its lease, or a keeper made late
    // after its answer, a first heartbeat held up a little past its drift moved the watchdog
    // a grace past the store's deadline, and the operation ran on beside a caller that took
    // the key over). "Close": under half that regular gap. Not under the grace: with a
    // heartbeat over 5/6 of the lease the grace is longer than the gap, and every held-up
    // heartbeat lost it (the runrev2 review); a first heartbeat due within the grace of the
    // estimate gets none anyway (see the constructor).
    // Judged on when the heartbeat was due, not on how long the acquisition took: a slow one
    // (say 150 ms of a 3 s lease) leaves its first heartbeat on the regular schedule, and
    // taking its grace called a lease nobody took lost after a stall (the runrev review).
    // With a renewal still in flight, the estimate it is judged against is the one that
    // renewal gives when it lands (its send plus its lease), not the older one (runrev: with
    // a heartbeat near half the lease, a slow renewal took the grace from the next one).
    // Nor does a first heartbeat due at or past the estimate get one (see the constructor).
    const reference =
      this.inFlight > 0
        ? Math.max(this.leaseEstimate, this.lastSentAt + this.lastLease - STORE_CLOCK_ALLOWANCE_MS)
        : this.leaseEstimate;
    const closeWithin = (leaseMs - (heartbeatMs || 0)) / 2;
    const unsure = this.firstBeatUnsure || this.beatDueAt + closeWithin >= reference;
    this.firstBeatUnsure = false;
    if (grace >= left && !atHold && (late || heldUp) && !unsure) {
      clearTimeout(this.watchdogTimer);
      const delay = Math.max(0, Math.min(Math.max(grace, left), this.holdLeft()));
      this.watchdogTimer = setTimeout(() => this.expire(), delay);
      this.watchdogTimer.unref?.();
      if (delay > left) graceEnd = now + delay;
    } else if (this.watchdogTimer === undefined) this.armWatchdog();
    const startedAt = this.now();
    const startedAtMono = this.mono === undefined ? 0 : this.mono.now();
    const timedFrom = this.settings.observed ? performance.now() : 0;
    // Never renew past the maximum hold: the last renewal is cut to what is left of it.
    const lease =
      this.mono === undefined
        ? Math.min(leaseMs, this.acquiredAt + maxHoldMs - startedAt)
        : Math.min(leaseMs, this.holdLeft());
    if (lease <= 0) {
      if (late) this.expire();
      return; // let the lease lapse; the watchdog aborts
    }
    // The next regular renewal is due one heartbeat after this one is sent, answered or not
    // by then (see the class comment): queued now, so a slow answer does not push it back.
    const seq = ++this.sent;
    this.inFlight++;
    this.lastSentAt = startedAt;
    this.lastLease = lease;
    if (graceEnd !== 0) {
      this.graceSeq = seq;
      this.graceEnd = graceEnd;
      if (this.mono !== undefined) this.monoGraceEnd = startedAtMono + (graceEnd - now);
    }
    clearTimeout(this.heartbeatTimer);
    this.heartbeats?.add(this);
    this.beatDueAt = startedAt + (heartbeatMs || 0);
    // Whether the keeper stopped awaiting this call (answered, failed or timed out).
    let awaited = true;
    const send = (context: StoreCallContext): Promise<OwnerWriteResult> => {
      // (Promise.resolve: the same promise for a native one, a promise for a plain value.)
      const call = Promise.resolve(
        store.extend({ key: this.key, owner: this.owner, leaseMs: lease, retentionMs }, context),
      );
      this.storePending++;
      // Settled at the store: counted out, independent of the time limit. Registered before
      // `callStore`'s own reactions, so it runs before the answer below is handled.
      const settled = () => {
        this.storePending--;
        // A call the keeper gave up on (time limit) settles late: a held-back renewal may go.
        if (!awaited) this.releaseDue();
      };
      call.then(settled, settled);
      return call;
    };
    try {
      const result = await callStore('extend', storeTimeoutMs, send, {
        observe: storeCallObserver(this.settings, 'extend', this.key, this.operation),
      });
      awaited = false;
      this.inFlight--;
      if (seq === this.graceSeq) this.graceSeq = 0;
      if (this.isDone()) return;
      if (!result.ok) {
        // Either outstanding renewal refused ends the renewals. While finishing, not_owner
        // may mean our own complete just landed: the final write tells which.
        this.cancelHeartbeat();
        if (this.phase === 'running')
          this.lose('heartbeat', 'Another execution took this key over');
        else if (late) this.expire();
        return;
      }
      // The estimate counts from the newest renewal that landed: an older one answered after
      // it (out of order) never moves the estimate back.
      // (An estimate that did not change keeps its watchdog: a renewal cut to the maximum
      // hold, sent on a clock a millisecond behind the timers, must not push it past the hold.)
      if (seq > this.landed) {
        this.landed = seq;
        const monoEstimate =
          this.mono === undefined ? 0 : startedAtMono + lease - STORE_CLOCK_ALLOWANCE_MS;
        const estimate = startedAt + lease - STORE_CLOCK_ALLOWANCE_MS;
        if (estimate !== this.leaseEstimate || monoEstimate !== this.monoEstimate) {
          this.leaseEstimate = estimate;
          this.monoEstimate = monoEstimate;
          this.armWatchdog();
        }
      }
      this.releaseDue();
      return;
    } catch (error) {
      awaited = false;
      this.inFlight--;
      if (seq === this.graceSeq) this.graceSeq = 0;
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
      // Retried a fifth of the heartbeat from now, in place of the regular renewal queued at
      // the send (still at most two outstanding at the store: `beat` holds a third back until
      // one settles).
      this.due = false;
      this.scheduleHeartbeat(true);
    }
  }
}
