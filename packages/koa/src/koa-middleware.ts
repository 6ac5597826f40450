import {
  BodyAlreadyReadError,
  BodyTooLargeError,
  bodyFromBytes,
  bodyFromParsed,
  createIdempotencyHandler,
  type HttpIdempotencyOptions,
  type IdempotencyContext,
  isJsonContentType,
  type RequestBody,
} from '@idem/http';
import {
  canonicalPath,
  checkTextLength,
  clientLeftSignal,
  headerValue,
  keptBytesBody,
  keptJsonText,
  leftUnanswered,
  nodeRequestBody,
  recordServerResponse,
  requestUrl,
  sendDecisionResponse,
  tappedInstead,
  tapRequestBodies,
  targetPath,
} from '@idem/http/node';
import type { Context, Middleware } from 'koa';

/**
 * Marks a Koa context whose request an idem middleware runs under a key it holds, with the
 * store, the scope option and the key field it holds it by: a second idem middleware on the
 * same request (mounted with `app.use` and again on a route) on the same store, with the same
 * `scope` (the same hook, or both 'global') and the same key, passes it on, or it would find the
 * key held by the first, answer 409, and the route never run. One on another store, with another
 * scope, or under another key header, acts on its own (its key is not the one held: passed on,
 * its protection was lost, rev35r). Shared by the ESM and CJS copies of this module.
 */
const RUNNING = Symbol.for('idem.koa.running');

type Held = { store: unknown; scope: unknown; field: string | undefined }[];

/** Options of {@link idempotency}: those of `@idem/http`, with hooks that get the Koa context. */
export type KoaIdempotencyOptions = HttpIdempotencyOptions<Context>;

/**
 * The route a request's operation is named after: the route `@koa/router` matched when the
 * middleware is mounted on a route (`router.post('/charges', idempotency(...), handler)`),
 * else the request's path in the one spelling `@koa/router`'s defaults route alike (case, a
 * trailing slash and percent-escapes do not matter), so another spelling of the path is
 * replayed or refused (422), never run again.
 */
function routeOf(ctx: Context): string {
  const matched = (ctx as { _matchedRoute?: unknown })._matchedRoute;
  if (typeof matched === 'string') {
    // Routers told apart by their `host` option serve one path with routes of their own: a
    // key taken on one host's route must not replay its answer to another's.
    const host = (ctx as { router?: { host?: unknown } }).router?.host;
    if (host === undefined || host === null || host === '') return matched;
    const named = `${matched} host=${(Array.isArray(host) ? host : [host]).map(String).join(',')}`;
    // A RegExp host (`/^[a-z]+\.example\.com$/`) serves several hosts (tenants, shops) with
    // one route: the host the request came to is named too (as the router matched it,
    // `ctx.host`), or a key taken on one tenant's host would replay its answer on another's
    // whenever their principals are alike (user ids numbered per tenant). A string or a list
    // names a fixed set of hosts, one operation.
    // A fully qualified spelling (`acme.example.com.`, the root's trailing dot) is the same
    // host: one operation, or a retry through it would run again.
    return host instanceof RegExp
      ? `${named} hostname=${ctx.host.toLowerCase().replace(/\.(?=(:\d*)?$)/, '')}`
      : named;
  }
  return canonicalPath(targetPath(ctx.originalUrl));
}

/**
 * Writes a replay or one of the library's own answers straight to the Node response, past
 * Koa (`ctx.respond = false`): upstream middleware that rewrites `ctx.body` after
 * `await next()` (an envelope, a compressor) already shaped the recorded bytes once, and must
 * not shape the replay a second time. Headers it set before `next()` (CORS) are on the Node
 * response already and go out with it.
 */
async function answer(
  ctx: Context,
  decision: Parameters<typeof sendDecisionResponse>[1],
): Promise<void> {
  // For upstream middleware that logs or measures ctx.status (Koa's default would be 404).
  ctx.status = decision.response.status;
  ctx.respond = false;
  await sendDecisionResponse(ctx.res, decision);
}

/**
 * Koa watches every response with `on-finished` from the start, and `on-finished` keeps one
 * socket listener a response, shared by all its callbacks: the one that destroys a stream
 * body (added when `ctx.body` is set) would run as soon as the client leaves, cutting short
 * a body that is to be drained and recorded without its client. Dropping the shared listener
 * makes the callbacks added from here on get their own, added after the recorder took the
 * socket, which holds their `'close'` until the body ends. Koa's own early callback (its
 * error handler, a no-op for a close without error) stays where it is.
 */
function detachEarlyFinishWatch(ctx: Context, warn: (message: string) => void): void {
  const res = ctx.res as { __onFinished?: unknown };
  const watch = res.__onFinished as ((() => void) & { queue?: unknown }) | null | undefined;
  // Koa's own callback was added before any middleware ran: no watch of the shape on-finished
  // 2 makes means its internals changed, and a client that leaves mid-stream may cut the
  // recorded body short (not recorded: a retry runs again). Said aloud, never silently.
  if (typeof watch !== 'function' || !Array.isArray(watch.queue)) {
    warn(
      "Koa's on-finished watch (res.__onFinished) not found: a client that leaves mid-stream may cut a streamed body short, which is then not recorded and runs again on retry. Check the on-finished version Koa uses.",
    );
    return;
  }
  res.__onFinished = null;
}

/** Whether the request has a body (a Content-Length past 0, a Transfer-Encoding, an HTTP/2 body). */
function declaresBody(req: Context['req']): boolean {
  const length = req.headers['content-length'];
  if (length !== undefined) return length !== '0';
  if (req.headers['transfer-encoding'] !== undefined) return true;
  return (req as { stream?: { endAfterHeaders?: boolean } }).stream?.endAfterHeaders === false;
}

/**
 * The body of the request for the fingerprint, when a body parser ran first: the bytes a
 * reader kept on `ctx.request.rawBody` (a Buffer) first, whatever the type, refused when they
 * are not as many as an uncompressed body's Content-Length says (`keptBytesBody`); for an object
 * parsed from a Content-Type that is not JSON (a form, or a type `extendTypes` names), the
 * text @koa/bodyparser keeps there (see {@link keptText}), as a parsed form loses what tells
 * different bodies apart (qs drops pairs past 1,000, pairs named `toString` or `constructor`,
 * an empty name...); else what the parser made of it (as `nodeRequestBody` takes it: a
 * parsed form without kept text is refused). When no parser read it: the bytes a reader that
 * ran first kept on `ctx.request.rawBody` (a Buffer or a string, as `ctx.req.rawBody` is
 * taken); else the raw bytes (@koa/bodyparser leaves a type it does not parse unread, with a
 * body of {}).
 * @throws BodyAlreadyReadError when a reader before the middleware is still reading the
 * stream (its `'data'` listener attached or the stream flowing, `next()` called before the
 * end): its bytes are not idem's to take or wait for, and read by two they would be neither
 * the reader's whole body nor a trustworthy fingerprint. Also, as `nodeRequestBody`, when the
 * bytes were read and nothing trustworthy was kept.
 */
async function bodyOf(ctx: Context, limit: number): Promise<RequestBody> {
  const { req } = ctx;
  if (req.readableEnded) {
    const parsed = (ctx.request as { body?: unknown }).body;
    const raw = (ctx.request as { rawBody?: unknown }).rawBody;
    const contentType = headerValue(req.headers, 'content-type');
    // A Buffer kept is the body itself (checked against the Content-Length), parsed or not.
    if (parsed !== undefined || req.readableDidRead) {
      const kept = keptBytesBody(req, raw, limit, 'ctx.request.rawBody');
      if (kept !== undefined) return tappedInstead(req, limit, kept, raw as Uint8Array);
    }
    if (parsed !== undefined) {
      if (
        typeof raw === 'string' &&
        parsed !== null &&
        typeof parsed === 'object' &&
        !(parsed instanceof Uint8Array)
      ) {
        if (!isJsonContentType(contentType))
          return tappedInstead(req, limit, keptText(req, raw, contentType, limit), raw);
        // JSON @koa/bodyparser parsed and kept the text of: its value as the checks take it,
        // or the text when it says more than the value (see `keptJsonText`).
        const body = await nodeRequestBody(req, parsed, limit).catch((error) =>
          keptInstead(error, raw, req, limit),
        );
        return keptJsonText(body, raw, contentType, limit);
      }
      const body = nodeRequestBody(req, parsed, limit);
      return raw === undefined
        ? body
        : body.catch((error) =>
            tappedInstead(req, limit, keptInstead(error, raw, req, limit), raw as string),
          );
    }
    // Text with a U+FFFD is not trusted: a reader that decoded the bytes as UTF-8 puts one for
    // every invalid sequence, so different bodies give the same text.
    if (req.readableDidRead && typeof raw === 'string' && !raw.includes('\uFFFD')) {
      const bytes = Buffer.from(raw);
      if (bytes.length > limit) throw new BodyTooLargeError(limit);
      // Kept as it came (a reader that did not inflate): the bytes stand, not inflated.
      return tappedInstead(req, limit, bodyFromBytes(bytes, contentType), bytes);
    }
  } else if (
    !req.readableDidRead &&
    (req.readableFlowing === true || req.listenerCount('data') > 0) &&
    declaresBody(req)
  )
    throw new BodyAlreadyReadError();
  return nodeRequestBody(req, undefined, limit);
}

/**
 * The text @koa/bodyparser kept on `ctx.request.rawBody` of a body it parsed into an object
 * (a form): the body as sent, with its percent-escapes and every pair, taken as a parsed
 * string is (refused when it holds U+FFFD or a lone surrogate, when its Content-Type names a
 * charset other than UTF-8, or when it is not as long as the body sent: decoded with another
 * `encoding`).
 */
function keptText(
  req: Context['req'],
  raw: string,
  contentType: string | undefined,
  limit: number,
): RequestBody {
  const body = bodyFromParsed(raw, contentType, limit);
  checkTextLength(req, raw, contentType, headerValue(req.headers, 'content-length'));
  return body;
}

/**
 * The body a reader kept on `ctx.request.rawBody` when the parsed body (a JSON value, a
 * string) was refused as decoded in a way that may have lost bytes (see `bodyFromParsed`):
 * @koa/bodyparser keeps the text it parsed there. Text is taken as a parsed string is
 * (refused when it holds U+FFFD or a lone surrogate, or its Content-Type names a charset
 * other than UTF-8). Anything else, or kept text refused too: the first refusal, which says why.
 */
function keptInstead(
  error: unknown,
  raw: unknown,
  req: Context['req'],
  limit: number,
): RequestBody {
  if (!(error instanceof BodyAlreadyReadError)) throw error;
  if (typeof raw !== 'string') throw error;
  try {
    return bodyFromParsed(raw, headerValue(req.headers, 'content-type'), limit);
  } catch (refused) {
    throw refused instanceof BodyAlreadyReadError ? error : refused;
  }
}

/**
 * Koa middleware that makes POST and PATCH (by default) idempotent by their
 * `Idempotency-Key` header. Mount it with `app.use` before the routes it protects (and before
 * or after a body parser: it reads the raw body and puts it back when none ran yet), or on a
 * `@koa/router` route. Downstream middleware finds the execution context (key, fence, abort
 * signal) at `ctx.state.idempotency`.
 *
 * The response is recorded where Koa writes it (the Node response), so a body of any kind
 * (JSON, a Buffer, a stream, SSE) is recorded as it went out, and a stream that breaks is
 * not a success.
 */
export function idempotency(options: KoaIdempotencyOptions): Middleware {
  const handler = createIdempotencyHandler<Context>(options);
  // A body parser mounted before the middleware reads the body first: the bytes as sent are
  // kept for it as they come in (see `tapRequestBodies`).
  tapRequestBodies(options);
  // Each warning said once (a message a warning: one never hides the other).
  const warned = new Set<string>();
  const warn = (message: string) => {
    if (warned.has(message)) return;
    warned.add(message);
    (options.onWarning ?? ((text: string) => console.warn(`[@idem/koa] ${text}`)))(message);
  };
  const waits = options.wait !== undefined && options.wait !== false;
  const headerName = (options.headerName ?? 'Idempotency-Key').toLowerCase();
  return async function idempotencyMiddleware(ctx, next) {
    // An idem middleware before this one already holds this key in this store for this request
    // (mounted twice): it protects the execution, this one would only find its key held (409
    // for ever).
    const held = (ctx as { [RUNNING]?: Held })[RUNNING];
    const field = held && headerValue(ctx.req.headers, headerName);
    if (
      held?.some(
        (one) => one.store === options.store && one.scope === options.scope && one.field === field,
      )
    ) {
      warn(
        'Mounted twice on one request (app.use and on a route?): the inner middleware passes the request on, the outer one protects it.',
      );
      return next();
    }
    // Under `wait`, a client that leaves while its duplicate waits ends the wait at once.
    const left = waits ? clientLeftSignal(ctx.res) : undefined;
    let decision: Awaited<ReturnType<typeof handler.begin>>;
    try {
      decision = await handler.begin({
        ...(left ? { signal: left.signal } : {}),
        native: ctx,
        method: ctx.method,
        url: requestUrl(ctx.originalUrl),
        route: routeOf(ctx),
        header: (name) => headerValue(ctx.req.headers, name),
        readBody: (limit) => bodyOf(ctx, limit),
      });
    } catch (error) {
      // Its client left: nobody to answer (nor an error to log), nothing ran.
      if (left?.signal.aborted) {
        ctx.respond = false;
        return;
      }
      throw error;
    } finally {
      left?.stop();
    }
    if (decision.action === 'pass') return next();
    if (decision.action === 'respond') return answer(ctx, decision);
    // Judged where the next middleware starts (see the recorder's `lateStart`): past the
    // lease's runway since the acquisition, the key is given back and 503 answered instead.
    const late = decision.recorder.lateStart();
    if (late) return answer(ctx, await late);
    ctx.state.idempotency = decision.recorder.context;
    const holding = {
      store: options.store,
      scope: options.scope,
      field: headerValue(ctx.req.headers, headerName),
    };
    if (held) held.push(holding);
    else (ctx as { [RUNNING]?: Held })[RUNNING] = [holding];
    recordServerResponse(ctx.res, decision.recorder);
    detachEarlyFinishWatch(ctx, warn);
    try {
      const running = next();
      // A client that leaves while the route still works (before its head) must not make
      // its silence count: the route is working, and a retry after two leases would run it
      // beside itself.
      decision.recorder.holdWhile(running);
      await running;
      // A route that took the response over (`ctx.respond = false`) and returned stays held
      // however long its answer takes (up to `maxHoldMs`): what it handed the response to (a
      // proxy waiting on its upstream) may still be working, and a retry must not run beside it.
    } catch (error) {
      // The route threw: its work ended as a failure, which a retry may run again (Koa's error
      // handler answers the 500 that releases the key). Should upstream swallow the error and
      // answer nothing (`ctx.respond = false`), its client gone, the silence counts from now on
      // (the key is free within two leases, as that 500 would have freed it), and an answer
      // that does come ends the watch.
      leftUnanswered(decision.recorder);
      // Past the head, Koa's error handler can answer nothing and leaves the response open,
      // and something the route started may still write to it and end it (a piped stream):
      // releasing now could run a retry beside it. The response is watched as one whose
      // client left: while it stays silent for a whole lease its heartbeats stop, so the key
      // is free within two leases, and a response that ends after all is still recorded.
      if (ctx.res.headersSent && !ctx.res.writableEnded) decision.recorder.clientGone();
      throw error;
    }
  };
}

/** The execution context of the current request, when the middleware ran it idempotently. */
export function getIdempotency(ctx: Context): IdempotencyContext | undefined {
  return ctx.state.idempotency as IdempotencyContext | undefined;
}
