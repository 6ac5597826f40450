import { AsyncLocalStorage } from 'node:async_hooks';
import {
  IdemError,
  markErrorClass,
  type OutcomePolicy,
  outcomePolicyAnswer,
  successOnly,
} from '@idem/core';

/**
 * The handler succeeded but the outcome policy (`isFinal`) did not keep its outcome: the key
 * was released, nothing was recorded, and the message is given back for another delivery (a
 * retry is what such a policy asks for), never acked.
 */
export class OutcomeNotKeptError extends IdemError<'OUTCOME_NOT_KEPT'> {
  constructor() {
    super(
      'OUTCOME_NOT_KEPT',
      'The outcome policy (isFinal) did not keep the handler’s outcome: the key was released and the message is given back for another delivery',
    );
    // Named by its own spelling, not by the class's name, which a bundle minified without
    // keepNames changes (as core's errors are named, corerev3): logs, and a failure recorded
    // and replayed, show it. An app's subclass keeps its own name (the corerev4 review).
    if (new.target === OutcomeNotKeptError) this.name = 'OutcomeNotKeptError';
  }
}

// Another copy's (the CommonJS build) recognised by this mark, never an app's class named the same.
markErrorClass(OutcomeNotKeptError, 'OutcomeNotKeptError');

/** What the policy said of one execution: `final` is unset until it was asked. */
export interface PolicyVerdict {
  final?: boolean;
  /**
   * What the policy threw of a success (the success was kept anyway, see `trackedPolicy`),
   * boxed: a policy may throw anything, `undefined` too, and the box alone says it threw.
   */
  policyFailed?: { error: unknown };
  /**
   * The handler was refused before it started (see `HandlerGates`): not the handler's
   * failure, never the policy's to keep; the key is released.
   */
  refused?: boolean;
}

/**
 * The engine's `isFinal`, which also tells each message what it said of that message's
 * execution: `execute` answers the same for a success recorded and one released, and throws
 * the handler's error after recording it or after releasing the key. One engine serves every
 * message at once, so the verdict goes where the execution runs (its async context), never
 * through a variable another message's execution could write in between.
 */
export function trackedPolicy<T>(policy: OutcomePolicy<T> | undefined): {
  isFinal: OutcomePolicy<T>;
  within<R>(verdict: PolicyVerdict, run: () => Promise<R>): Promise<R>;
} {
  const decide = policy ?? (successOnly as OutcomePolicy<T>);
  const verdicts = new AsyncLocalStorage<PolicyVerdict>();
  return {
    isFinal: (settled) => {
      const verdict = verdicts.getStore();
      // Nothing ran: whatever the policy (`everythingFinal` too), the key is released.
      if (verdict?.refused === true) return false;
      let final: boolean;
      try {
        // Read as the engine reads it (truthiness); a Promise (an async isFinal) is a policy
        // fault, as a throw: truthy, it recorded every failed message as done and acked it.
        final = outcomePolicyAnswer(decide(settled));
      } catch (error) {
        // A policy that throws of a success (a bug in it): the handler ran to completion, so
        // its outcome is kept (recorded, as the engine records it too; the message acked, the
        // policy's error reported, not thrown by execute). Of a failure it throws on: the key
        // is released and the message given back, as the engine does.
        if (!settled.ok || verdict === undefined) throw error;
        verdict.policyFailed = { error };
        verdict.final = true;
        return true;
      }
      if (verdict !== undefined) verdict.final = final;
      return final;
    },
    within: (verdict, run) => verdicts.run(verdict, run),
  };
}
