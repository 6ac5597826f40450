import { IdemError, type Idempotency, markErrorClass } from '@idem/core';
import { MAX_TIMER_MS } from './engine-verdicts.js';

/**
 * The message's handler was not started: the message had already been given back to the
 * broker (its `maxHoldMs` passed while its key, its payload or the store's answer to the
 * acquisition was still awaited), or the consumer had stopped. Its key, if it was acquired,
 * is released (owner-checked), so the redelivery runs the handler at once rather than
 * waiting out the lease.
 */
export class HandlerNotStartedError extends IdemError<'HANDLER_NOT_STARTED'> {
  constructor(why: 'given_back' | 'stopped') {
    super(
      'HANDLER_NOT_STARTED',
      why === 'given_back'
        ? 'The message was given back (maxHoldMs passed) before its handler could start: the handler did not start, the key is released'
        : 'The consumer had stopped before the handler could start: the handler did not start, the key is released and the message given back',
    );
    // Named by its own spelling, not by the class's name, which a bundle minified without
    // keepNames changes (as core's errors are named, corerev3): logs, and a failure recorded
    // and replayed, show it. An app's subclass keeps its own name (the corerev4 review).
    if (new.target === HandlerNotStartedError) this.name = 'HandlerNotStartedError';
  }
}

// Another copy's (the CommonJS build) recognised by this mark, never an app's class named the same.
markErrorClass(HandlerNotStartedError, 'HandlerNotStartedError');

/** One message's gate: shut once the message is given back or the consumer stopped. */
export interface MessageGate {
  /** Why the handler must not start now, if it must not. */
  refusal(): HandlerNotStartedError | undefined;
  /** Called when the handler starts (it then runs on: a promise cannot be cancelled). */
  started(): void;
  /** Whether the handler has started. */
  readonly hasStarted: boolean;
  /** Whether an acquisition of the message's key was ever sent (see `track`). */
  readonly sent: boolean;
  /** Shuts the gate: the message was given back (at its `maxHoldMs`, or at the consumer's stop). */
  giveBack(why?: 'given_back' | 'stopped'): void;
  /**
   * An acquisition of the message's key (an `execute` call) that `idle()` waits for until it
   * settles or the handler starts. What comes before it (the key and payload functions) is
   * not waited for: past a shut gate nothing of it reaches the store.
   */
  track(executing: Promise<unknown>): void;
  /** The tracked acquisition still unsettled whose handler has not started, if any. */
  pending(): Promise<void> | undefined;
}

/**
 * Where handlers may start. A handler starts only while its message is held by this
 * consumer: not once the message was given back at its `maxHoldMs` (an acquisition the store
 * answered after that, late but within `storeTimeoutMs`, started it beside the redelivery),
 * and not once the consumer's `stop()` has resolved (the handler ran after it, under the
 * connections the application then closed). `idle()` waits for every acquisition sent whose
 * handler has not started, its message given back or not: those may still call the store (a
 * late answer, then its release). Each is bounded by the engine's time limits (the acquire's
 * and the release's `storeTimeoutMs`), whatever the key or payload functions do.
 */
export class HandlerGates {
  private closed = false;
  private readonly unstarted = new Set<Promise<void>>();
  private readonly closeListeners = new Set<() => void>();

  /** A gate for one message. */
  open(): MessageGate {
    let givenBack: 'given_back' | 'stopped' | undefined;
    let hasStarted = false;
    let sent = false;
    // The acquisition tracked now and how to stop tracking it. Acquisitions of one message
    // are sent one after the other (the store-outage wait), so one is tracked at a time; a
    // settled one leaves nothing behind (a race with a "started" promise, which never
    // settles for a message that does not run, kept each of them until the message was done).
    let current: { pending: Promise<void>; finish: () => void } | undefined;
    return {
      refusal: () =>
        givenBack
          ? new HandlerNotStartedError(givenBack)
          : this.closed
            ? new HandlerNotStartedError('stopped')
            : undefined,
      started: () => {
        hasStarted = true;
        current?.finish();
      },
      get hasStarted() {
        return hasStarted;
      },
      get sent() {
        return sent;
      },
      giveBack: (why = 'given_back') => {
        givenBack ??= why;
      },
      track: (executing) => {
        sent = true;
        if (hasStarted) return;
        let done!: () => void;
        const tracked = {
          pending: new Promise<void>((resolve) => {
            done = resolve;
          }),
          finish: () => {
            this.unstarted.delete(tracked.pending);
            if (current === tracked) current = undefined;
            done();
          },
        };
        this.unstarted.add(tracked.pending);
        current = tracked;
        executing.then(tracked.finish, tracked.finish);
      },
      pending: () => current?.pending,
    };
  }

  /** From now on no handler starts; a message whose handler had not started is given back. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const listener of [...this.closeListeners]) listener();
    this.closeListeners.clear();
  }

  /**
   * Calls `listener` when {@link close} is called (at once if it was already): a message still
   * waiting for its key or payload function is given back then, not at its `maxHoldMs`.
   * Returns what stops listening (call it once the message is done).
   */
  onClose(listener: () => void): () => void {
    if (this.closed) {
      listener();
      return () => {};
    }
    this.closeListeners.add(listener);
    return () => this.closeListeners.delete(listener);
  }

  /** Settles when every acquisition sent (as of now) whose handler has not started has settled. */
  idle(): Promise<void> {
    return Promise.all([...this.unstarted]).then(() => {});
  }
}

/** Waits for the tasks, at most `timeoutMs` (`Infinity`: until they settle). */
export async function settleWithin(tasks: Promise<unknown>[], timeoutMs: number): Promise<void> {
  if (timeoutMs === Number.POSITIVE_INFINITY) {
    await Promise.allSettled(tasks);
    return;
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    Promise.allSettled(tasks),
    new Promise((resolve) => {
      timer = setTimeout(resolve, timeoutMs);
    }),
  ]);
  clearTimeout(timer);
}

/**
 * How long an acquisition sent may take to be answered and its key released: the engine gives
 * the acquire and then the release `storeTimeoutMs` each (and a second for the rest).
 */
export const answerBoundMs = (storeTimeoutMs: number): number =>
  Math.min(2 * storeTimeoutMs + 1_000, MAX_TIMER_MS);

/**
 * A broker helper's stop(), once its processor is closed (its `timeoutMs` passed, or
 * `stop(0)`): the acquisitions already sent whose handler has not started can no longer start
 * one, so a key the store grants them is released at once. Those are waited for past
 * `timeoutMs`, at most `storeTimeoutMs` more: each was sent before the close, so the engine
 * settles it within that (its own time limit counts from its send), and the release of a key
 * it grants is sent as soon as it is answered; a store that answers promptly has answered the
 * release too. Sent after stop() resolved, a release met the store's connection the
 * application had closed, and the key stayed held for a whole lease, the message's
 * redelivery given back meanwhile as a duplicate in progress. The release's own answer is not
 * waited for past that bound: a store that answered the acquisition and then stops answering
 * would time it out anyway (the key left to its lease either way), and a shutdown whose
 * `timeoutMs` is fitted to a grace period must not run a whole store time limit more for it.
 */
export async function releasedAfterClose(processor: {
  idle(): Promise<void>;
  readonly engine: { readonly settings: { storeTimeoutMs: number } };
}): Promise<void> {
  await settleWithin([processor.idle()], processor.engine.settings.storeTimeoutMs);
}

/** What stop() uses of a processor's engine. */
type Drains = { readonly engine: Pick<Idempotency<unknown>, 'drain'> };

/**
 * The final writes the processor's engine still retries in the background (a handler that ran
 * while the store failed: its outcome is kept and written once the store is back, up to
 * `maxHoldMs`), waited for at most `timeoutMs` (`Infinity`: until they settle). A broker
 * helper's stop() waits for them with the handlers in flight: cut off by the application
 * closing the store's connection once stop() resolved, such a write never landed, and the
 * message's redelivery ran the handler again once the lease had passed. Only those
 * (`finalWritesOnly`): the engine's give-backs (the release of a key whose acquire timed out,
 * its handler never started, sent again for up to about two leases while the store is out)
 * are not waited for. Cut short, a give-back leaves that key to its lease: the redelivery
 * waits for it, as after a crash, and never runs the handler twice. Waited for, every stop
 * during a store outage took its whole `timeoutMs` with no outcome at stake.
 */
export async function backgroundWrites(processor: Drains, timeoutMs: number): Promise<void> {
  await processor.engine
    .drain(Math.min(Math.max(0, timeoutMs), MAX_TIMER_MS), { finalWritesOnly: true })
    .catch(() => 0);
}

/**
 * A broker helper's stop(): waits for `tasks` (the handlers in flight, the acquisitions still
 * unanswered), then for the final writes the engine retries in the background
 * (see backgroundWrites), all within `timeoutMs` (`Infinity`: until they settle). In that
 * order: a handler still running at the stop has no write pending yet; its write, failed at its
 * end, goes to the background then. Asked at the same time, the drain found nothing and
 * resolved at once, and stop() resolved with that write still retried: cut off by the store's
 * connection closed after it, it never landed, and the redelivery ran the handler a second
 * time once the lease had passed (test/consrev3-stop-write-in-flight.test.ts).
 */
export async function settledThenWritten(
  tasks: Promise<unknown>[],
  processor: Drains,
  timeoutMs: number,
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  await settleWithin(tasks, timeoutMs);
  const left = Math.max(0, deadline - performance.now());
  await settleWithin([backgroundWrites(processor, left)], left);
}
