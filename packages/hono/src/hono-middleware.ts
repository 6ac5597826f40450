import {
  bodyFromBytes,
  createIdempotencyHandler,
  type HttpIdempotencyOptions,
  type IdempotencyContext,
  readBodyLimited,
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
 * The routes Hono matched for the request after this middleware, as one name: the method
 * routes (`app.post(...)`) if any, else every later match. Hono routes before the first
 * middleware runs, whatever the spelling of the path (escapes, a trailing slash when not
 * `strict`), so this names the operation, not the spelling. Undefined when nothing matched.
 */
function matchedRoute(c: Context): string | undefined {
  const later = c.req.matchedRoutes.slice(c.req.routeIndex + 1);
  const methodRoutes = later.filter((route) => route.method !== 'ALL');
  const routes = methodRoutes.length > 0 ? methodRoutes : later;
  return routes.length > 0 ? routes.map((route) => route.path).join(' ') : undefined;
}

/**
 * Hono 4 middleware that makes POST and PATCH (by default) idempotent by their
 * `Idempotency-Key` header. It hands Hono's own Web `Request` and `Response` to
 * `@idem/http`: the body is read from a clone (the handler still gets it), and a streamed
 * response flows to the client while it is recorded. The operation a key is unique within
 * is the route Hono matched, so a retry through another spelling of the path is replayed
 * or refused (422), never run again.
 */
export function idempotency(
  options: HonoIdempotencyOptions,
): MiddlewareHandler<{ Variables: IdempotencyVariables }> {
  const handler = createIdempotencyHandler<Context>(options);
  return async function idempotencyMiddleware(c, next) {
    const request = c.req.raw;
    const route = matchedRoute(c);
    const decision = await handler.begin({
      native: c,
      method: request.method,
      url: request.url,
      ...(route === undefined ? {} : { route }),
      header: (name) => request.headers.get(name) ?? undefined,
      signal: request.signal,
      // A clone, so the handler still gets an unread body.
      readBody: async (limit) =>
        bodyFromBytes(
          await readBodyLimited(request.clone().body, limit),
          request.headers.get('content-type'),
        ),
    });
    if (decision.action === 'pass') return next();
    let response: Response;
    if (decision.action === 'respond') {
      response = decision.response;
    } else {
      const { recorder } = decision;
      c.set('idempotency', recorder.context);
      try {
        // Hono turns a throw of the handler into `c.res` (app.onError), recorded by the policy.
        await next();
        response = await recorder.recordResponse(c.res, request.signal);
      } catch (error) {
        // Never leave the key held: released, so a retry executes again.
        await recorder.fail(error);
        throw error;
      }
    }
    // Unset first: assigning over a response merges the old one's headers into the new.
    c.res = undefined;
    c.res = response;
  };
}
