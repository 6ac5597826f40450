/**
 * Calls an application's listener (`onMessage`, `onConsumerStatus`) so that it can never break
 * the consumer: what it throws is ignored, and so is the rejection of a promise it returns (an
 * async listener is assignable to `(report) => void`; its rejection would otherwise be an
 * unhandled rejection, which kills the process).
 */
export function callListener<A>(listener: ((arg: A) => unknown) | undefined, arg: A): void {
  try {
    const returned: unknown = listener?.(arg);
    if (
      returned !== null &&
      (typeof returned === 'object' || typeof returned === 'function') &&
      'then' in returned
    )
      Promise.resolve(returned).then(undefined, () => {});
  } catch {
    // A broken listener must not change what the broker is told.
  }
}
