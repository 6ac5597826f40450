import { IdemError } from '@idem/core';

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
  }
}

/** One message's gate: shut once the message is given back or the consumer stopped. */
export interface MessageGate {
  /** Why the handler must not start now, if it must not. */
  refusal(): HandlerNotStartedError | undefined;
  /** Called when the handler starts (it then runs on: a promise cannot be cancelled). */
  started(): void;
  /** Whether the handler has started. */
  readonly hasStarted: boolean;
  /** Shuts the gate: the message was given back. */
  giveBack(): void;
}

/**
 * Where handlers may start. A handler starts only while its message is held by this
 * consumer: not once the message was given back at its `maxHoldMs` (an acquisition the store
 * answered after that, late but within `storeTimeoutMs`, started it beside the redelivery),
 * and not once the consumer's `stop()` has resolved (the handler ran after it, under the
 * connections the application then closed). `idle()` waits for every message whose handler
 * has not started and whose processing has not ended, given back or not: those are the ones
 * that may still call the store (a late acquisition, then its release).
 */
export class HandlerGates {
  private closed = false;
  private readonly unstarted = new Set<Promise<void>>();

  /** A gate for one message; `processing` settles when its processing ends. */
  open(): { gate: MessageGate; track(processing: Promise<unknown>): void } {
    let givenBack = false;
    let hasStarted = false;
    let onStart: (() => void) | undefined;
    const gate: MessageGate = {
      refusal: () =>
        givenBack
          ? new HandlerNotStartedError('given_back')
          : this.closed
            ? new HandlerNotStartedError('stopped')
            : undefined,
      started: () => {
        hasStarted = true;
        onStart?.();
      },
      get hasStarted() {
        return hasStarted;
      },
      giveBack: () => {
        givenBack = true;
      },
    };
    const track = (processing: Promise<unknown>) => {
      if (hasStarted) return;
      const started = new Promise<void>((resolve) => {
        onStart = resolve;
      });
      const pending: Promise<void> = Promise.race([
        processing.then(
          () => {},
          () => {},
        ),
        started,
      ]).then(() => {
        onStart = undefined;
        this.unstarted.delete(pending);
      });
      this.unstarted.add(pending);
    };
    return { gate, track };
  }

  /** From now on no handler starts; a message whose handler had not started is given back. */
  close(): void {
    this.closed = true;
  }

  /** Settles when every message whose handler has not started (as of now) is done with. */
  idle(): Promise<void> {
    return Promise.all([...this.unstarted]).then(() => {});
  }
}
