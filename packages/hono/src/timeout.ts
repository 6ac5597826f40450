import type { Context, MiddlewareHandler } from 'hono';
import { HTTPException } from 'hono/http-exception';
import { holdWhileRunning } from './hono-middleware.js';

/** The answer of a request that took too long: an `HTTPException`, or one made for the context. */
export type TimeoutException = HTTPException | ((c: Context) => HTTPException);

const gatewayTimeout = new HTTPException(504, { message: 'Gateway Timeout' });

/**
 * `hono/timeout`'s middleware (same arguments, same 504 `HTTPException` thrown after `duration`
 * ms), which may be mounted after `idempotency()`: it hands the rest of the chain (the
 * handler it overtakes) to the idempotency middleware, whose key then stays held until that
 * handler settled (retries get 409), and a handler that ran to its end after the timeout
 * answered leaves the `answered_outside` marker (retries get a 500 `outcome-not-recorded`
 * problem), never a second run; one that threw is released. `hono/timeout` mounted after
 * `idempotency()` gives nothing of the handler's end (see the README). Mounted before it, or
 * for a request the middleware does not run idempotently, it is `hono/timeout`.
 */
export function timeout(
  duration: number,
  exception: TimeoutException = gatewayTimeout,
): MiddlewareHandler {
  return async function idemTimeout(c, next) {
    let timer: ReturnType<typeof setTimeout> | undefined;
    /** The error the timeout threw, which Hono's compose puts on `c.error`: not the handler's. */
    let thrown: unknown;
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        thrown = typeof exception === 'function' ? exception(c) : exception;
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
    );
    try {
      await Promise.race([running, timedOut]);
    } finally {
      if (timer !== undefined) clearTimeout(timer);
    }
  };
}
