import { AsyncLocalStorage } from 'node:async_hooks';

/**
 * Tells a response's end made by the held handler's own work (its code and what it awaits)
 * from one made outside it (a request timeout's answer, from a timer set before the handler
 * started). An adapter runs the handler with {@link runHeld}; `recordServerResponse` asks
 * {@link endedOutsideHeld} when the app ends the response.
 */
const heldWork = new AsyncLocalStorage<object>();
/** Recorders whose handler runs under {@link runHeld}: true while it runs, false once settled. */
const running = new WeakMap<object, boolean>();
/** What to call when the held work itself ends the response (see {@link whenEndedInside}). */
const ownEnds = new WeakMap<object, () => void>();

/**
 * Runs `handler` (the route's handler, called by the adapter) as the work of `recorder`'s
 * execution: an end of the response from within it (or from what it awaits) is its own answer,
 * and so is one made once its promise settled (the framework sending what it returned); any
 * other end while it runs was answered outside it. Same result as `handler()`.
 * @internal
 */
export function runHeld<T>(recorder: object, handler: () => T): T {
  running.set(recorder, true);
  const settled = () => {
    running.set(recorder, false);
  };
  let result: T;
  try {
    result = heldWork.run(recorder, handler);
  } catch (error) {
    settled();
    throw error;
  }
  const then = (result as { then?: unknown } | null | undefined)?.then;
  // Registered before the framework's own reaction (it sends what the handler returned).
  if (typeof then === 'function') then.call(result, settled, settled);
  else settled();
  return result;
}

/** Whether the current code runs as `recorder`'s held handler's own work. @internal */
export function insideHeld(recorder: object): boolean {
  return heldWork.getStore() === recorder;
}

/**
 * Whether an end made now is not `recorder`'s handler's own: it runs under {@link runHeld},
 * has not settled, and the current code is not its work. @internal
 */
export function endedOutsideHeld(recorder: object): boolean {
  if (running.get(recorder) !== true) return false;
  if (heldWork.getStore() !== recorder) return true;
  const own = ownEnds.get(recorder);
  if (own !== undefined) {
    ownEnds.delete(recorder);
    own();
  }
  return false;
}

/**
 * Calls `callback` when `recorder`'s held work itself ends the response while it runs (not
 * through the framework's send: `reply.hijack()` and `reply.raw.end()`), before the end is
 * judged. @internal
 */
export function whenEndedInside(recorder: object, callback: () => void): void {
  ownEnds.set(recorder, callback);
}
