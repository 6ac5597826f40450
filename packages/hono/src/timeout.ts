import type { Context, MiddlewareHandler } from 'hono';
import { HTTPException } from 'hono/http-exception';
import { holdWhileRunning } from './hono-middleware.js';

/** The answer of a request that took too long: an `HTTPException`, or one made for the context. */
export type TimeoutException = HTTPException | ((c: Context) => HTTPException);

const gatewayTimeout = new HTTPException(504, { message: 'Gateway Timeout' });

/** The longest delay `setTimeout` takes: past it, Node fires after 1 ms (TimeoutOverflowWarning). */
const MAX_DELAY = 2 ** 31 - 1;

/**
 * `hono/timeout`'s middleware (same arguments, same 504 `HTTPException` thrown after `duration`
 * ms), which may be mounted after `idempotency()`: it hands the rest of the chain (the
 * handler it overtakes) to the idempotency middleware, whose key then stays held until that
 * handler settled (retries get 409), and a handler that ran to its end after the timeout
 * answered leaves the `answered_outside` marker (retries get a 500 `outcome-not-recorded`
 * problem), never a second run; one that threw is released. `hono/timeout` mounted after
 * `idempotency()` gives nothing of the handler's end (see the README). Mounted before it, or
 * for a request the middleware does not run idempotently, it is `hono/timeout`. A `duration`
 * that is not a number of 0 or more throws (`RangeError`); one past `setTimeout`'s 2^31 - 1 ms
 * (`Infinity`) never times out (`setTimeout` would fire it at once). An exception function that
 * throws answers the default 504 (its error as the `cause`), not a crash of the process.
 */
export function timeout(
  duration: number,
  exception: TimeoutException = gatewayTimeout,
): MiddlewareHandler {
  if (typeof duration !== 'number' || Number.isNaN(duration) || duration < 0) {
    throw new RangeError(`timeout(): duration must be a number of 0 or more ms, got ${duration}`);
  }
  const never = duration > MAX_DELAY;
  return async function idemTimeout(c, next) {
    let timer: ReturnType<typeof setTimeout> | undefined;
    /** The error the timeout threw, which Hono's compose puts on `c.error`: not the handler's. */
    let thrown: unknown;
    /**
     * The timer fired: `next()` had not settled then (its settling clears the timer within the
     * same microtasks), so the timeout's answer is the one that goes out, and Hono's compose
     * drops the handler's `Response`.
     */
    let overtook = false;
    const timedOut = new Promise<never>((_, reject) => {
      if (never) return;
      timer = setTimeout(() => {
        overtook = true;
        try {
          thrown = typeof exception === 'function' ? exception(c) : exception;
        } catch (error) {
          // Still a timeout: its 504, the function's error as its cause (a throw that is no
          // `Error` would pass Hono's `app.onError` and reject idem's `next()`: released early).
          thrown = new HTTPException(504, { message: 'Gateway Timeout', cause: error });
        }
        reject(thrown);
      }, duration);
    });
    const before = c.error;
    const running = next();
    // Hono's compose catches a throw of the handler (`app.onError`), so `next()` fulfils either
    // way: a handler that threw shows as an error set on the context that is not the timeout's.
    holdWhileRunning(
      c,
      running.then(() => {
        const error: unknown = c.error;
        if (error !== undefined && error !== before && error !== thrown) throw error;
      }),
      // Ran to its end after the timeout answered: never released (see `holdWhileRunning`).
      () => overtook,
    );
    try {
      await Promise.race([running, timedOut]);
    } finally {
      if (timer !== undefined) clearTimeout(timer);
    }
  };
}
