import { isThenable } from '@idem/core';

/**
 * Calls an application's listener (`onWarning` and the like) so that a broken one never
 * changes an answer: a throw is ignored, and so is a rejection of whatever promise it answers,
 * this realm's `Promise` or not (an async listener made in a `vm` context, a sandbox or another
 * test environment answers a foreign promise; by default Node ends the process on an unhandled
 * rejection). A thenable whose `then` throws is ignored too.
 */
export function callListener(call: () => unknown): void {
  try {
    const result = call();
    if (isThenable(result)) Promise.resolve(result).catch(() => {});
  } catch {
    // A broken listener: ignored, as above.
  }
}
