import {
  createIdempotencyHandler,
  type HttpIdempotencyOptions,
  type IdempotencyContext,
  type ResponseRecorder,
} from '@idem/http';
import {
  clientLeftSignal,
  headerValue,
  nodeRequestBody,
  readyForOwnMethods,
  recordServerResponse,
  requestUrl,
  runHeld,
  sendDecisionAtOnce,
  sendDecisionResponse,
  tapRequestBodies,
} from '@idem/http/node';
import type { Request, RequestHandler, Response } from 'express';
import { routeOf } from './express-route.js';

/** The recorder of each response the middleware records (see {@link holdWhile}). */
const recorders = new WeakMap<Response, ResponseRecorder>();

/** Options of {@link idempotency}: those of `@idem/http`, with hooks that get the Express request. */
export type ExpressIdempotencyOptions = HttpIdempotencyOptions<Request>;

/**
 * Express 5 middleware that makes POST and PATCH (by default) idempotent by their
 * `Idempotency-Key` header. Mount it with `app.use` before the routes it protects, or on a
 * route (`app.post('/charges', idempotency(options), handler)`). The handler finds the
 * execution context (key, fence, abort signal) at `res.locals.idempotency`.
 *
 * The operation a key is unique within is the route Express matched when mounted on a route;
 * with `app.use` it is the path in the one spelling Express routes alike (case, a trailing
 * slash and percent-escapes do not matter), so a retry through another spelling of the path
 * is replayed or refused (422), never run again.
 */
export function idempotency(options: ExpressIdempotencyOptions): RequestHandler {
  const handler = createIdempotencyHandler<Request>(options);
  // A body parser mounted before the middleware reads the body first: the bytes as sent are
  // kept for it as they come in (see `tapRequestBodies`).
  tapRequestBodies(options);
  const waits = options.wait !== undefined && options.wait !== false;
  return async function idempotencyMiddleware(req, res, next) {
    const target = req.originalUrl;
    // Under `wait`, a client that leaves while its duplicate waits ends the wait at once.
    const left = waits ? clientLeftSignal(res) : undefined;
    let decision: Awaited<ReturnType<typeof handler.begin>>;
    try {
      decision = await handler.begin({
        ...(left ? { signal: left.signal } : {}),
        native: req,
        method: req.method,
        // Path and query as they are (`requestTarget` reads them alike), but for a target that
        // would name a host or is absolute: `//host/path`, and `/\host/path`, which the URL
        // parser reads as `//host/path` too (a backslash is a slash in an http URL).
        url:
          target.charCodeAt(0) === 47 /* / */ &&
          target.charCodeAt(1) !== 47 &&
          target.charCodeAt(1) !== 92 /* backslash */
            ? target
            : requestUrl(target),
        route: routeOf(req),
        header: (name) => headerValue(req.headers, name),
        // Called for a request that needs a key. A body parser may have run first (express.json,
        // express.raw, express.text, express.urlencoded).
        readBody: (limit) => {
          // Express gave both their app's prototype: readied now, every property added to them
          // from here (ours, the body parser's, the router's) is cheap (see `readyForOwnMethods`).
          readyForOwnMethods(req, 'res');
          readyForOwnMethods(res, 'req');
          return nodeRequestBody(req, req.body, limit);
        },
      });
    } catch (error) {
      // Its client left: nobody to answer, nothing ran.
      if (left?.signal.aborted) return;
      throw error;
    } finally {
      left?.stop();
    }
    if (decision.action === 'pass') return next();
    if (decision.action === 'respond') {
      // A replay handed to the socket at once makes no promise (see `sendDecisionAtOnce`).
      const sending = sendDecisionAtOnce(res, decision);
      if (sending) await sending;
      return;
    }
    // Judged where the route starts (see the recorder's `lateStart`): past the lease's runway
    // since the acquisition, the key is given back and 503 answered instead.
    const late = decision.recorder.lateStart();
    if (late) return sendDecisionResponse(res, await late);
    res.locals.idempotency = decision.recorder.context;
    recorders.set(res, decision.recorder);
    recordServerResponse(res, decision.recorder, {
      // An error answered before any route matched (a body parser's 400, a 404) is not the
      // outcome of a route: never recorded, whatever the policy.
      isHandlerOutcome: (status) => status < 400 || status >= 500 || req.route !== undefined,
    });
    next();
  };
}

/** The execution context of the current request, when the middleware ran it idempotently. */
export function getIdempotency(res: Response): IdempotencyContext | undefined {
  return res.locals.idempotency as IdempotencyContext | undefined;
}

/**
 * Tells the middleware that the route's work for `res` runs until `running` settles: an answer
 * that is not final sent meanwhile (the 503 of a request-timeout middleware mounted before
 * `idempotency()`, `connect-timeout`) does not free the key while the work runs; retries get
 * 409 until it settled, then the key is released (the work's result never reached the
 * response, so nothing is recorded). Express does not hand a route's promise to the
 * middlewares before it: without this, such a 503 frees the key at once, and a retry runs the
 * route beside the first run. Does nothing for a response the middleware does not record.
 */
export function holdWhile(res: Response, running: PromiseLike<unknown>): void {
  recorders.get(res)?.holdWhile(running);
}

/**
 * Wraps an async route handler (Express 5 takes its promise) so that its promise is held
 * (see {@link holdWhile}): `app.post('/charges', heldWhileRunning(async (req, res) => ...))`.
 * Same `this`, arguments and result.
 */
export function heldWhileRunning<Handler extends RequestHandler>(handler: Handler): Handler {
  return function (this: unknown, req, res, next) {
    const recorder = recorders.get(res);
    // Run as the execution's work (see `runHeld`): an answer sent from outside it while it
    // runs (a timeout middleware's 503) is never taken for its own, even when the route then
    // settles in that same turn.
    const result: unknown =
      recorder === undefined
        ? handler.call(this, req, res, next)
        : runHeld(recorder, () => handler.call(this, req, res, next));
    if (typeof (result as PromiseLike<unknown> | undefined)?.then === 'function')
      holdWhile(res, result as PromiseLike<unknown>);
    return result;
  } as Handler;
}
