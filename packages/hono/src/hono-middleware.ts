import {
  createIdempotencyHandler,
  type HttpIdempotencyOptions,
  type IdempotencyContext,
} from '@idem/http';
import type { Context, MiddlewareHandler } from 'hono';

/** Options of {@link idempotency}: those of `@idem/http`, with hooks that get the Hono `Context`. */
export type HonoIdempotencyOptions = HttpIdempotencyOptions<Context>;

/** Context variables the middleware sets: `c.get('idempotency')` in the handler. */
export interface IdempotencyVariables {
  /** Key, fence and abort signal of the execution; absent when the request was not subject to idempotency. */
  idempotency?: IdempotencyContext;
}

/**
 * Hono 4 middleware that makes POST and PATCH (by default) idempotent by their
 * `Idempotency-Key` header. It hands Hono's own Web `Request` and `Response` to
 * `@idem/http`: the body is read from a clone (the handler still gets it), and a streamed
 * response flows to the client while it is recorded.
 */
export function idempotency(
  options: HonoIdempotencyOptions,
): MiddlewareHandler<{ Variables: IdempotencyVariables }> {
  const handler = createIdempotencyHandler<Context>(options);
  return async function idempotencyMiddleware(c, next) {
    const response = await handler.handle(
      c.req.raw,
      async (_request, context) => {
        if (context) c.set('idempotency', context);
        await next();
        return c.res;
      },
      c,
    );
    if (response !== c.res) {
      // Unset first: assigning over a response merges the old one's headers into the new.
      c.res = undefined;
      c.res = response;
    }
  };
}
