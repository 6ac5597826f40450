import type { IncomingMessage } from 'node:http';
import {
  answeredOutsideOf,
  answerInsteadOfAbort,
  answerMustAbort,
  BodyTooLargeError,
  bodyFromBytes,
  callListener,
  createIdempotencyHandler,
  type HttpIdempotencyOptions,
  type IdempotencyContext,
  type IdempotencyHandler,
  peekBody,
  type RequestBody,
  type ResponseRecorder,
  readBodyLimited,
} from '@idem/http';
import type { Context, MiddlewareHandler } from 'hono';
import { offerBodyToHono } from './body-cache.js';
import {
  rewatchConsoleError,
  watchHelperBody,
  watchHelperFailures,
} from './hono-helper-failures.js';

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

type NodeIncoming = IncomingMessage & { rawBody?: unknown };

/** The Node request under @hono/node-server (`c.env.incoming`); undefined elsewhere (Bun, Deno, workers, `app.request`). */
function nodeRequestOf(c: Context): NodeIncoming | undefined {
  const incoming = (c.env as { incoming?: unknown } | undefined)?.incoming as
    | NodeIncoming
    | undefined;
  if (
    typeof incoming !== 'object' ||
    incoming === null ||
    typeof incoming.unshift !== 'function' ||
    typeof incoming.listenerCount !== 'function'
  ) {
    return undefined;
  }
  return incoming;
}

/**
 * The Node request under @hono/node-server while nobody has read from it: its Web `Request`
 * is made from it only when first used, so its body can be read from the Node stream and put
 * back for that `Request`, with no clone. Undefined when the body was handed over already
 * (`rawBody`) or something has started reading it (a Web `Request` made from it listens for
 * its data).
 */
function untouchedNodeRequest(c: Context): NodeIncoming | undefined {
  const incoming = nodeRequestOf(c);
  if (
    !incoming ||
    incoming.rawBody !== undefined ||
    incoming.readableFlowing !== null ||
    incoming.readableDidRead ||
    incoming.listenerCount('data') > 0 ||
    incoming.listenerCount('readable') > 0
  ) {
    return undefined;
  }
  return incoming;
}

/**
 * The request body for the fingerprint. On @hono/node-server, from the Node request while
 * nobody has read it (see {@link untouchedNodeRequest}): read and put back, so the handler's
 * `Request` gets the same bytes. Unread, it is read from a clone (the handler still
 * gets it) and never past `limit`. Read already through Hono (a validator in front of this
 * middleware, `c.req.json()` in the scope hook), the raw request is consumed but Hono keeps
 * what it read: the bytes come from its body cache. What was read from the Node request is
 * left in `peeked`, for the handler (see {@link offerBodyToHono}).
 */
async function readBody(
  c: Context,
  limit: number,
  peeked: { body?: RequestBody },
): Promise<RequestBody> {
  const request = c.req.raw;
  const contentType = request.headers.get('content-type');
  const incoming = untouchedNodeRequest(c);
  if (incoming) {
    const bytes = await peekBody(incoming, limit);
    // Handed over as `rawBody`, which @hono/node-server reads first when it builds the
    // handler's body: 2.x refuses a Node request whose stream was read at all (even with the
    // bytes put back), 1.x takes it as well.
    incoming.rawBody = bytes;
    peeked.body = bodyFromBytes(bytes, contentType);
    return peeked.body;
  }
  if (!request.bodyUsed) {
    return bodyFromBytes(await readBodyLimited(request.clone().body, limit), contentType);
  }
  if (Object.keys(c.req.bodyCache).length === 0) {
    throw new TypeError(
      'The request body was read before the idempotency middleware, outside Hono (c.req.raw): read it through c.req (json, text, parseBody, a validator) or mount the middleware first',
    );
  }
  const bytes = new Uint8Array(await c.req.arrayBuffer());
  if (bytes.length > limit) throw new BodyTooLargeError(limit);
  return bodyFromBytes(bytes, contentType);
}

/** The recorder of each request the middleware runs idempotently (see `failedExecution`). */
const recorders = new WeakMap<Context, ResponseRecorder>();

/**
 * The execution of `c` failed although its response may still end normally (a stream
 * helper's callback threw): its response is not recorded, and its key is released once the
 * body ends (the helper's `onError` may still write to it or work until then), so a retry
 * runs again, never beside it. Nothing when the middleware did not run `c` idempotently.
 * @internal
 */
export function failedExecution(c: Context): void {
  recorders.get(c)?.failAtEnd();
}

/** @idem/http's `FAIL_AFTER_HELD` (registered: see its head-source.ts). */
const FAIL_AFTER_HELD = Symbol.for('@idem/http.recorder.fail-after-held');
/** @idem/http's `HELD_AFTER_END` (registered: see its head-source.ts). */
const HELD_AFTER_END = Symbol.for('@idem/http.recorder.held-after-end');

/**
 * The chain after a request timeout mounted after the middleware (@idem/hono's `timeout()`)
 * runs on: the key of `c` stays held (renewed, up to `maxHoldMs`) until `running` settled, also
 * once the timeout's answer went out (see the recorder's `holdWhile`): then the
 * `answered_outside` marker when it was fulfilled after `overtook()` (the timeout answered in
 * its place), released when it rejected. Nothing when the middleware did not run `c`
 * idempotently (the timeout mounted before it, a method it passes). The recorder is the one
 * running now: an instance nested after the timeout puts its own on `c` later.
 *
 * A handler the timeout overtook that ran to its end is never released for a retry to run it
 * again, whatever the turn it ended in (the recorder's "settled within the turn the response
 * ended in: its own answer" is for adapters whose handler writes the response itself; here
 * the answer is the timeout's, and Hono's compose drops the handler's `Response`): waited for
 * at the end of a response that is not final, that end counts as its work done (the marker);
 * not yet judged, that end is marked (`ANSWERED_OUTSIDE`: at once when its recording did not
 * start).
 * @internal
 */
export function holdWhileRunning(
  c: Context,
  running: PromiseLike<unknown>,
  overtook: () => boolean,
): void {
  const recorder = recorders.get(c) as
    | (ResponseRecorder & { [HELD_AFTER_END]?: (wrote?: boolean) => boolean })
    | undefined;
  if (!recorder) return;
  recorder.holdWhile(
    Promise.resolve(running).then(() => {
      if (!overtook() || recorder[HELD_AFTER_END]?.(true)) return;
      void answeredOutsideOf(recorder)?.(honoRes(c).status);
    }),
  );
}

/** Contexts whose response comes from a stream helper of @idem/hono (see `markIdemHelper`). */
const idemHelpers = new WeakSet<Context>();

/**
 * Marks `c`'s response as made by a stream helper of @idem/hono (`stream`, `streamText`,
 * `streamSSE`), which marks the execution failed when its callback throws.
 * @internal
 */
export function markIdemHelper(c: Context): void {
  idemHelpers.add(c);
}

/**
 * Whether the response of `c` looks made by Hono's own `streamSSE` or `streamText` (from
 * `hono/streaming`): those set `Transfer-Encoding: chunked` on it, which a Web `Response`
 * otherwise never carries; @idem/hono's own helpers are told apart by their mark. A warning
 * and the watch for a failed callback (see `watchHelperBody`) hang on it: Hono's `stream()`
 * sets no such header and is not seen.
 */
function honoStreamHelper(c: Context, response: Response): boolean {
  return response.headers.get('transfer-encoding') === 'chunked' && !idemHelpers.has(c);
}

const HONO_HELPER_WARNING =
  "A response behind idempotency() was made by Hono's own streamSSE or streamText (hono/streaming): they catch a throw of their callback and end the body normally. Without an onError the middleware sees the throw (Hono logs it) and does not record the stream; a throw handed to onError is yours, and a stream cut short so is recorded and replayed as a success. Import stream, streamText and streamSSE from @idem/hono instead (same arguments, same response)";

/** What the middleware reads of @hono/node-server's Node response (`c.env.outgoing`). */
interface NodeOutgoing {
  destroyed?: boolean;
  writableFinished?: boolean;
  writableEnded?: boolean;
  headersSent?: boolean;
  destroy?(error?: Error): unknown;
  /** HTTP/2: the stream of node:http2's compatibility response (which has no `destroyed`). */
  stream?: { close?(code: number): unknown; destroyed?: boolean; closed?: boolean };
  once(event: 'close', listener: () => void): unknown;
  hasHeader?(name: string): boolean;
  getHeader?(name: string): unknown;
  removeHeader?(name: string): void;
  /** Node's own: set by `removeHeader('transfer-encoding')`, then it never frames chunked. */
  _removedTE?: boolean;
}

/** @hono/node-server's Node response (`c.env.outgoing`); undefined elsewhere. */
function nodeResponseOf(c: Context): NodeOutgoing | undefined {
  const outgoing = (c.env as { outgoing?: unknown } | undefined)?.outgoing as
    | NodeOutgoing
    | undefined;
  if (!nodeRequestOf(c) || typeof outgoing?.once !== 'function') return undefined;
  return outgoing;
}

/**
 * The header by which @hono/node-server leaves alone a response the app sent (or dropped)
 * itself (its `RESPONSE_ALREADY_SENT`): it then writes nothing.
 */
const ALREADY_SENT = 'x-hono-already-sent';

/**
 * Drops the connection of a first execution that failed before anything of its response went
 * out (see `answerMustAbort`: its outcome could not be stored, or its body broke at once), as
 * the Node adapters do: on @hono/node-server the client then sees no status at all, where
 * node-server would send the 2xx head (and, for a body failing on its first read, end it
 * as an empty, complete one). False elsewhere (Bun, Deno, workers): the runtime gets the
 * response, whose body fails after its head.
 */
function dropConnection(c: Context): boolean {
  const outgoing = nodeResponseOf(c);
  if (!outgoing || outgoing.headersSent || typeof outgoing.destroy !== 'function') return false;
  // HTTP/2 (node:http2's compatibility response): the stream is reset with INTERNAL_ERROR, not
  // the NO_ERROR a plain destroy sends; the session's other streams go on.
  const stream = outgoing.stream;
  if (typeof stream?.close === 'function') stream.close(NGHTTP2_INTERNAL_ERROR);
  else outgoing.destroy();
  return true;
}

/** node:http2's `constants.NGHTTP2_INTERNAL_ERROR` (not imported: this module runs off Node too). */
const NGHTTP2_INTERNAL_ERROR = 2;

/** The "client is gone" signal of each context, made once (see {@link clientSignal}). */
const clientSignals = new WeakMap<Context, AbortSignal>();

/**
 * An abort signal for "the client is gone". On @hono/node-server it follows the Node response
 * (`c.env.outgoing`): `request.signal` is made on first use there, and one made after the
 * client left (while upstream middleware still worked, or before the handler returned) never
 * aborts, so a bounded wait would poll on to its bound for nobody, and a streamed body the
 * server stopped reading would be neither recorded nor cancelled and the key held until
 * `maxHoldMs`. A response whose client left already (its HTTP/2 stream closed: node:http2's
 * compatibility response has no `destroyed`) aborts it at once, as does a closed connection
 * under a pipelined HTTP/1.1 request. Elsewhere, the request's own signal. One signal (a
 * `close` listener on its response, and over HTTP/1.1 one on its request) per request.
 */
function clientSignal(c: Context): AbortSignal {
  const outgoing = nodeResponseOf(c);
  if (!outgoing) return c.req.raw.signal;
  const made = clientSignals.get(c);
  if (made) return made;
  const controller = new AbortController();
  // Not gone when the response went out whole. node:http2's compatibility response reads
  // `writableFinished` true as soon as its stream closed, also when the client reset it
  // before the response ended: there it takes `writableEnded` too.
  const gone = () => {
    if (!(outgoing.writableFinished && outgoing.writableEnded !== false))
      controller.abort(new Error('The client closed the connection'));
  };
  // HTTP/1.1: a response queued behind an earlier one of its connection (a pipelined request)
  // has no socket yet, and Node never closes it when the connection closes: only its request
  // is destroyed then. A request that closes on a closed connection is gone too (a `close`
  // on the request itself, not on the connection every request of it shares).
  const incoming = outgoing.stream ? undefined : nodeRequestOf(c);
  const connectionGone = () => {
    if (incoming?.socket?.destroyed) gone();
  };
  if (
    outgoing.destroyed ||
    outgoing.stream?.destroyed ||
    outgoing.stream?.closed ||
    incoming?.socket?.destroyed
  )
    gone();
  else {
    outgoing.once('close', gone);
    incoming?.once('close', connectionGone);
  }
  clientSignals.set(c, controller.signal);
  return controller.signal;
}

/**
 * On @hono/node-server: removes a `Content-Length` or `Transfer-Encoding` that upstream code
 * put on the Node response itself (`c.env.outgoing.setHeader`, a bridged Node middleware)
 * before an answer is written there. node-server writes its head over them: a whole answer
 * went out with its own `Content-Length` beside that `Transfer-Encoding` (both framings), a
 * streamed one with that length beside a body of another (a desync of the connection). The
 * answer is framed by its own body then, as `@idem/http`'s Node senders do: node-server's
 * `Content-Length` for a whole body, Node's chunked framing for a stream (a name removed as
 * if never set: Node frames nothing itself for a `Transfer-Encoding` removed), none on a 204
 * or 304 (RFC 9112 6.1), and over HTTP/2 no `Transfer-Encoding` at all.
 */
function dropNodeFraming(c: Context, status: number): void {
  const outgoing = nodeResponseOf(c);
  if (!outgoing || outgoing.headersSent || typeof outgoing.removeHeader !== 'function') return;
  if (outgoing.hasHeader?.('content-length')) outgoing.removeHeader('content-length');
  if (outgoing.getHeader?.('transfer-encoding') === undefined) return;
  outgoing.removeHeader('transfer-encoding');
  if (!outgoing.stream && status !== 204 && status !== 304) outgoing._removedTE = false;
}

/**
 * How the handler of a request ended when `next()` settled: `inside` when nothing was answered
 * outside this middleware meanwhile (the handler's chain answered, as usual); otherwise the
 * request was answered outside it (a timeout mounted before it, `hono/timeout`: Hono then drops
 * the `Response` the handler returns) while the handler ran, and it then either ran to its end,
 * `fulfilled`, or failed, `rejected`: Hono's compose catches the handler's throw, sets `c.error`
 * and puts `app.onError`'s answer on `c.res`, so a throw reads as an error set on the context
 * after the answer went out (a throw set before, as `hono/timeout`'s own, is not the handler's).
 */
type OutsideVerdict = 'inside' | 'fulfilled' | 'rejected';

/** What the middleware uses of `AsyncLocalStorage` (node:async_hooks, also on Bun, Deno, workerd). */
interface Flows {
  run<T>(store: FlowStore, callback: () => T): T;
  getStore(): FlowStore | undefined;
}

/** The `next()` calls of this middleware a piece of code runs within, innermost first. */
interface FlowStore {
  token: object;
  parent: FlowStore | undefined;
}

/** The async context storage, made once; null where the runtime has none. */
let flowStorage: Flows | null | undefined;

/**
 * An `AsyncLocalStorage` where the runtime hands one out without a static `node:` import
 * (Node >= 20.16, Bun, Deno, workerd with `nodejs_compat`, or a global one): this module loads
 * on the Web platform alone too. Undefined elsewhere.
 */
function flows(): Flows | undefined {
  if (flowStorage === undefined) {
    flowStorage = null;
    try {
      const global = globalThis as {
        AsyncLocalStorage?: new () => Flows;
        process?: { getBuiltinModule?: (id: string) => unknown };
      };
      const hooks = global.process?.getBuiltinModule?.('node:async_hooks') as
        | { AsyncLocalStorage?: new () => Flows }
        | undefined;
      const Storage = hooks?.AsyncLocalStorage ?? global.AsyncLocalStorage;
      if (typeof Storage === 'function') flowStorage = new Storage();
    } catch {
      flowStorage = null;
    }
  }
  return flowStorage ?? undefined;
}

/** Whether `store` (a piece of code's) lies within the `next()` call of `token`. */
function within(store: FlowStore | undefined, token: object): boolean {
  for (let at = store; at; at = at.parent) if (at.token === token) return true;
  return false;
}

/**
 * The body of `response`; undefined when it cannot be had: @hono/node-server's own `Response`
 * whose stream it read to send it throws on `body` (it makes a Web `Response` from that stream).
 */
function bodyOf(response: Response | undefined): ReadableStream<Uint8Array> | null | undefined {
  try {
    return response?.body;
  } catch {
    return undefined;
  }
}

/** Whether the body of `response` can still be read (or it has none). */
function readable(response: Response): boolean {
  const body = bodyOf(response);
  return body === null || (body !== undefined && !body.locked && !response.bodyUsed);
}

/** A `Response` of `status` and `headers` with an empty body of its own (none where `status` allows none). */
function emptyCopy(status: number, headers: Headers): Response {
  const bodiless = status === 204 || status === 205 || status === 304;
  const body = bodiless
    ? null
    : new ReadableStream<Uint8Array>({
        start(controller) {
          controller.close();
        },
      });
  return new Response(body, { status, headers });
}

/** A watch of `c` while `next()` runs (see {@link watchOutside}). */
interface OutsideWatch {
  /** Runs `next` within the watch (its async context marks what is inside this middleware). */
  run(next: () => Promise<void>): Promise<void>;
  /** Stops the watch and gives the verdict. */
  verdict(): OutsideVerdict;
}

/**
 * Starts watching `c` for an answer that goes out while `next()` runs (see
 * {@link OutsideVerdict}). On @hono/node-server the Node response says when something went out.
 * Elsewhere (Bun, Deno, workers, `app.fetch` called directly) the runtime sends the `Response`
 * the app returned, and nothing tells this middleware when; but the app returns it only once the
 * chain outside this middleware put it on the context, and code outside runs outside the async
 * context of this middleware's `next()`: an answer (`c.res`) put on the context from outside it
 * while `next()` runs is taken as the one that went out. Where the runtime has no async context
 * storage, always `inside` there. `c.error` is watched through an own accessor while `next()`
 * runs (Hono's `Context` has it as a plain field), put back as a plain field after; `c.res`
 * through an own accessor over Hono's.
 */
function watchOutside(c: Context): OutsideWatch {
  const outgoing = nodeResponseOf(c);
  const storage = outgoing ? undefined : flows();
  const token = {};
  let answeredElsewhere = false;
  /** Set when the answer is first put on `c.res` from outside, cleared a turn of the event loop later. */
  let turn: ReturnType<typeof setTimeout> | undefined;
  const sent = outgoing
    ? () => outgoing.headersSent === true || outgoing.writableEnded === true
    : () => answeredElsewhere;
  // The async context this middleware was called in: that of the chain before it, whose code
  // (a timeout's) runs there or in one enclosing it (a timeout before an outer idempotency()).
  const caller = storage?.getStore();
  // Code run from a callback of another request's `next()` (a callback-style limiter after this
  // middleware that starts a waiter when the request before it ends, an emitter's listener) runs
  // the route in that request's context: not the chain before this middleware, not outside.
  const outside = () => {
    if (storage === undefined) return false;
    const store = storage.getStore();
    return !within(store, token) && (store === undefined || within(caller, store.token));
  };
  const run = (next: () => Promise<void>) =>
    storage ? storage.run({ token, parent: caller }, next) : next();
  // Nothing to tell, nor once something went out already.
  if ((!outgoing && !storage) || sent()) return { run, verdict: () => 'inside' };
  let failedAfter = false;
  // A `Response` put on `c.res` after the outside answer went out is the handler's own (a route
  // that assigns `c.res` itself, as apps/llm-api's does behind its `deliver` middleware, which
  // answers a 503 early and reads the real answer in the background): readable, so recorded as
  // usual. Only a handler whose `Response` Hono dropped (`hono/timeout`) leaves the marker, also
  // when a middleware after this one put the outside answer back on `c.res` (a copy of it with a
  // header added, `new Response(c.res.body, c.res)`): the answer then carries that one's body.
  let assignedAfter = false;
  /** The last `Response` put on `c.res` before the answer went out: the one that went out. */
  let latest: Response | undefined;
  /** The copies of the answer that went out put on `c.res` since (see `hookContext`), and their bodies. */
  const answered = new WeakSet<object>();
  /** Those copies, to tell at the end whether code after this middleware read their body. */
  const copies: Response[] = [];
  /**
   * A `Response` returned by code after this middleware (the route's) was dropped by Hono's
   * compose once the answer went out, before anything was put on `c.res` after it: the
   * handler's own answer is lost, and what code after this middleware puts on `c.res` since
   * (a middleware that answers its own JSON for any 5xx without reading the old body) is made
   * in place of the timeout's answer, not the route's (see `finalizedRead`).
   */
  let droppedAfter = false;
  /** Answers put on `c.res` from outside (see `answeredInTurn`). */
  let outsideAnswers = 0;
  /**
   * Code outside (or with no async context) set `c.error`, or read `c.finalized` true once the
   * answer went out: the chain before this middleware failed (a timeout's throw), took a
   * `Response` returned to it, or finished (Hono's dispatch reads it last), or compose dropped
   * the route's `Response` from a context-less callback (see `answeredInTurn`).
   */
  let movedOutside = false;
  const unhook = hookContext(c, {
    sent,
    finalizedRead() {
      if (outside()) {
        if (sent()) movedOutside = true;
      } else if (sent() && !assignedAfter && !failedAfter) droppedAfter = true;
    },
    wantsCopy: () => sent() && !assignedAfter,
    readsInside: () => !outside(),
    adopt(copy) {
      answered.add(copy);
      copies.push(copy);
      if (copy.body) answered.add(copy.body);
    },
    assigned(response, after) {
      // From outside this middleware (off @hono/node-server): the outside answer, also when a
      // middleware before it rewraps that answer once it counts as gone out (`compress()`
      // mounted first, whose new body is no longer the one that answer had).
      if (outside()) {
        latest = response;
        outsideAnswers += 1;
        if (!answeredElsewhere) {
          turn = setTimeout(() => {
            turn = undefined;
          }, 0);
        }
        answeredElsewhere = true;
      } else if (after) assignedAfter = true;
      else latest = response;
    },
    errorSet() {
      // The outer chain's own error (its timeout's) is not the handler's.
      if (outside()) movedOutside = true;
      else if (sent()) failedAfter = true;
    },
  });
  /** Whether `response` is the answer that went out again (itself, a copy of it, one carrying its body). */
  const outsideAnswer = (response: Response) => {
    if (response === latest || answered.has(response)) return true;
    // A body made from the copy's (piped through `compress()` or a `TransformStream`, read by
    // `c.res.text()` into a new one): the copy's body was read, by code after this middleware
    // (nothing else sees the copy), so what now stands on `c.res` was made from that answer.
    if (copies.some((copy) => copy.bodyUsed || copy.body?.locked === true)) return true;
    const body = bodyOf(response);
    return body !== null && body !== undefined && (answered.has(body) || body === bodyOf(latest));
  };
  /**
   * Off @hono/node-server, an answer put on `c.res` from a callback with no async context at all
   * (a gate after this middleware run by an emitter ticked from a timer made at load) reads as
   * put there from outside, as a timeout's does when this middleware is the first to use the
   * async context storage. A handler a timeout overtook runs on: it returns its `Response`, which
   * Hono's compose drops (`droppedAfter`), or ends in a later turn of the event loop. The route's
   * own answer, put there from such a callback, is the end of `next()`: it settles within the turn
   * that answer was put there in, nothing dropped nor read (copied) meanwhile; recorded then.
   * Not when the handler a timeout overtook ran to its end within that turn too (its I/O done
   * right after the timer): the chain before this middleware then set `c.error` (the timeout's
   * throw) or read `c.finalized` (took the timeout's `Response`, or finished), compose dropped
   * the route's `Response` reading it from the callback, or a second answer came from outside
   * (the timeout's over the route's): all read as outside, and the marker stays.
   */
  const answeredInTurn = () =>
    storage !== undefined &&
    answeredElsewhere &&
    turn !== undefined &&
    !droppedAfter &&
    !movedOutside &&
    outsideAnswers === 1 &&
    copies.length === 0;
  const verdict = (): OutsideVerdict => {
    unhook();
    const inTurn = answeredInTurn();
    clearTimeout(turn);
    // Hono's own `c.res`: an outer watch still on (idempotency() nested) would copy it.
    const res = honoRes(c);
    // What the handler wrote to the Node response itself, marked so for node-server, is its own.
    if (!sent() || res.headers.has(ALREADY_SENT)) return 'inside';
    if (failedAfter) return 'rejected';
    if (!assignedAfter) return inTurn ? 'inside' : 'fulfilled';
    if (droppedAfter) return 'fulfilled';
    // Put on `c.res` after the answer went out: the route's own, unless it is that answer again.
    return outsideAnswer(res) ? 'fulfilled' : 'inside';
  };
  return { run, verdict };
}

/** One watch's part in the accessors a context carries while watches are on (see {@link hookContext}). */
interface ContextWatch {
  /** Whether the answer went out, as this watch tells. */
  sent(): boolean;
  /** Whether a read of `c.res` now gets a copy of the answer that went out (see `hookContext`). */
  wantsCopy(): boolean;
  /** Whether the code reading now runs within this watch's `next()` (the chain after idem). */
  readsInside(): boolean;
  /** That copy, put on `c.res`. */
  adopt(copy: Response): void;
  /** `response` was put on `c.res` (as Hono keeps it), `after` the answer went out as this watch told before. */
  assigned(response: Response, after: boolean): void;
  /** `c.error` was set. */
  errorSet(): void;
  /**
   * `c.finalized` was read true by code other than the context's own helpers (`c.header()`,
   * `c.text()`...): Hono's compose, once a handler or middleware returned a `Response`, which it
   * then drops (the context is finalized already).
   */
  finalizedRead(): void;
}

/** The watches on each context, and how to take their accessors off (see {@link hookContext}). */
const contextHooks = new WeakMap<Context, { watches: Set<ContextWatch>; unhook(): void }>();

/** Hono's own `c.res`, past the accessor {@link hookContext} puts on the context. */
function honoRes(c: Context): Response {
  const accessor = accessorOf(c, 'res');
  return (accessor?.get ? accessor.get.call(c) : c.res) as Response;
}

/**
 * Puts `watch` on `c` (taken off by the function returned). One set of accessors per context,
 * whatever the number of watches on it (idempotency() nested: an inner one's watch starts
 * under the outer's and may end after it, with a timeout between the two): `c.res` through an
 * own accessor over Hono's, `c.error` through one over its plain field (put back as a plain
 * field once the last watch is off), `c.header()` wrapped.
 *
 * Reading `c.res` once the answer went out (from within `next()`, or its body read to send it): a middleware after
 * this one that copies it (`new Response(c.res.body, c.res)`, Hono's setter merging its headers)
 * would throw on it, and Hono would take that throw for the handler's. A copy of it on `c.res`
 * instead, same status and headers, its body empty (what went out cannot be read again), marked
 * as the answer that went out, for every watch that tells so. `c.header()` after the answer went
 * out copies Hono's own `c.res` (not through the getter) and throws as well on such a body:
 * that copy put on `c.res` first.
 */
function hookContext(c: Context, watch: ContextWatch): () => void {
  let hooks = contextHooks.get(c);
  if (!hooks) {
    const watches = new Set<ContextWatch>();
    const undo: (() => void)[] = [];
    /** Calls of the context's own helpers under way (their reads of `c.finalized` are not compose's). */
    let helperDepth = 0;
    const resAccessor = accessorOf(c, 'res');
    if (resAccessor?.get && resAccessor.set && !Object.hasOwn(c, 'res')) {
      const { get, set } = resAccessor;
      Object.defineProperty(c, 'res', {
        configurable: true,
        enumerable: false,
        get() {
          const current = get.call(c) as Response;
          let seeing: ContextWatch[] | undefined;
          for (const each of watches) {
            if (!each.wantsCopy()) continue;
            seeing ??= [];
            seeing.push(each);
          }
          if (!seeing) return current;
          // Status and headers first: @hono/node-server's own `Response` gives nothing else once
          // its body was tried and found read.
          const status = current.status;
          const headers = current.headers;
          // Still readable: the runtime may not have read it yet (off @hono/node-server, a slow
          // client), and it holds that very `Response`: its body is not for code after idem.
          // The runtime itself (Hono's dispatch returning it) reads from outside, and gets it.
          if (readable(current) && !seeing.some((each) => each.readsInside())) return current;
          const copy = emptyCopy(status, headers);
          for (const each of seeing) each.adopt(copy);
          set.call(c, undefined);
          set.call(c, copy);
          return copy;
        },
        set(response: unknown) {
          const before = [...watches].map((each) => [each, each.sent()] as const);
          set.call(c, response);
          if (response === undefined) return;
          const now = get.call(c) as Response;
          for (const [each, after] of before) each.assigned(now, after);
        },
      });
      undo.push(() => delete (c as { res?: unknown }).res);
      const header = Object.getOwnPropertyDescriptor(c, 'header');
      const original: unknown = header?.value;
      if (header?.writable && header.configurable && typeof original === 'function') {
        Object.defineProperty(c, 'header', {
          ...header,
          value(...args: unknown[]) {
            if ([...watches].some((each) => each.sent())) void c.res;
            helperDepth += 1;
            try {
              return original.apply(c, args);
            } finally {
              helperDepth -= 1;
            }
          },
        });
        undo.push(() => Object.defineProperty(c, 'header', header));
      }
      // The context's own helpers that read `c.finalized` (`header()` above).
      for (const name of FINALIZED_READERS) {
        const helper = Object.getOwnPropertyDescriptor(c, name);
        const own: unknown = helper?.value;
        if (!helper?.writable || !helper.configurable || typeof own !== 'function') continue;
        Object.defineProperty(c, name, {
          ...helper,
          value(...args: unknown[]) {
            helperDepth += 1;
            try {
              return own.apply(c, args);
            } finally {
              helperDepth -= 1;
            }
          },
        });
        undo.push(() => Object.defineProperty(c, name, helper));
      }
    }
    const finalized = Object.getOwnPropertyDescriptor(c, 'finalized');
    if (finalized && 'value' in finalized && finalized.configurable && finalized.writable) {
      let value: unknown = finalized.value;
      Object.defineProperty(c, 'finalized', {
        configurable: true,
        enumerable: finalized.enumerable ?? true,
        get() {
          // Read true, compose drops the `Response` it holds; false, it puts it on `c.res` (an
          // app mounted under another one, answered on the parent's context).
          if (value === true && helperDepth === 0) for (const each of watches) each.finalizedRead();
          return value;
        },
        set(next: unknown) {
          value = next;
        },
      });
      undo.push(() =>
        Object.defineProperty(c, 'finalized', {
          value,
          writable: true,
          enumerable: finalized.enumerable ?? true,
          configurable: true,
        }),
      );
    }
    const own = Object.getOwnPropertyDescriptor(c, 'error');
    if (!own || ('value' in own && own.configurable && own.writable)) {
      let value: unknown = own?.value;
      const enumerable = own?.enumerable ?? true;
      Object.defineProperty(c, 'error', {
        configurable: true,
        enumerable,
        get: () => value,
        set: (error: unknown) => {
          value = error;
          for (const each of watches) each.errorSet();
        },
      });
      undo.push(() =>
        Object.defineProperty(c, 'error', {
          value,
          writable: true,
          enumerable,
          configurable: true,
        }),
      );
    }
    const made = {
      watches,
      unhook() {
        contextHooks.delete(c);
        for (const step of undo) step();
      },
    };
    hooks = made;
    contextHooks.set(c, made);
  }
  const on = hooks;
  on.watches.add(watch);
  return () => {
    if (!on.watches.delete(watch)) return;
    if (on.watches.size === 0) on.unhook();
  };
}

/**
 * Helpers of Hono's `Context` (own fields) other than `header()` that read `c.finalized` (Hono
 * 4.13: `text()` alone), wrapped on each context (see {@link hookContext}). One missing here
 * makes its call, by a route after an early outside answer, read as compose's drop: the marker
 * instead of that route's own answer, never a second run.
 */
const FINALIZED_READERS = ['text'] as const;

/** The accessor (getter and setter) `name` of `target`'s prototype chain, if any. */
function accessorOf(target: object, name: string): PropertyDescriptor | undefined {
  for (let proto = Object.getPrototypeOf(target); proto; proto = Object.getPrototypeOf(proto)) {
    const found = Object.getOwnPropertyDescriptor(proto, name);
    if (found) return 'get' in found ? found : undefined;
  }
  return undefined;
}

/** Headers of the placeholder `c.res` an answer never takes: they describe that empty body. */
const PLACEHOLDER_ONLY = new Set(['content-length', 'content-type', 'transfer-encoding']);

/**
 * Puts `answer` (a replay, one of the library's own answers) on `c.res` with the headers
 * upstream middleware set on Hono's placeholder response before `next()` (`cors()`, a request
 * id, `c.header()`), as Hono merges them when a handler replaces `c.res` and as the Node
 * adapters send them, with two differences: a header the answer has itself (the recorded
 * outcome's, the replay marker, a problem's) is never overridden, and the placeholder's
 * `Content-Length`, `Content-Type` and `Transfer-Encoding` (of its empty body) are never
 * taken. Upstream `Set-Cookie` lines go along (each kept), unless the answer has its own.
 */
function answerWith(c: Context, answer: Response): void {
  dropNodeFraming(c, answer.status);
  // Hono's getter makes the placeholder (from `c.header()` values) when there is none yet.
  const upstream = c.res.headers;
  let response = answer;
  let own: Set<string> | undefined;
  for (const [name, value] of upstream) {
    if (PLACEHOLDER_ONLY.has(name)) continue;
    own ??= new Set(answer.headers.keys());
    if (own.has(name)) continue;
    try {
      response.headers.append(name, value);
    } catch {
      // Headers that cannot change (a `Response` from `fetch`): a copy takes them.
      response = new Response(response.body, response);
      response.headers.append(name, value);
    }
  }
  // Not an outcome, unless a replay: an outer instance must not record it (see `ownAnswers`).
  if (!response.headers.has('idempotent-replayed')) ownAnswers.set(c, response);
  // Unset first: assigning over a response merges the old one's headers into the new,
  // over its own (done above, the answer's own first).
  c.res = undefined;
  c.res = response;
}

/**
 * The middleware's own answers put on `c.res` (its 400, 409, 413, 422 and 503 problems, a
 * marker's 500, the bodiless 500 of a dropped connection), never a handler's outcome. An
 * outer `idempotency()` (two configs on one route, other stores or scopes) whose `next()` ends
 * on one of them releases its key instead of recording it: recorded under `finalOnceStarted`,
 * an inner 409 `in-progress` would be replayed to every retry of that key for the whole
 * retention, the outcome never reaching it.
 */
const ownAnswers = new WeakMap<Context, Response>();

/**
 * Whether `response` (on `c.res` once `next()` settled) is an idempotency()'s own answer on
 * `c`, carries its body (a middleware between two instances may rewrap it: `new
 * Response(c.res.body, c.res)`), or was made from it (its body read). Nothing is read of a body unless an inner instance answered
 * and something else stands on `c.res` now: on @hono/node-server reading `body` makes a
 * lightweight `Response` a real one.
 */
function ownAnswer(c: Context, response: Response): boolean {
  const own = ownAnswers.get(c);
  if (!own) return false;
  if (own === response) return true;
  // Its body read (a middleware between the two instances that builds a body of its own from
  // it: an error format for any non-2xx): nothing else reads it before this `next()` settled
  // (the runtime sends what the app returned), so what stands on `c.res` was made from it.
  if (own.bodyUsed || bodyOf(own)?.locked === true) return true;
  const body = bodyOf(response);
  return body !== null && body !== undefined && body === bodyOf(own);
}

/**
 * Hono 4 middleware that makes POST and PATCH (by default) idempotent by their
 * `Idempotency-Key` header. It hands Hono's own Web `Request` and `Response` to
 * `@idem/http`: the body is read from a clone (the handler still gets it), and a streamed
 * response flows to the client while it is recorded. The operation a key is unique within
 * is the route Hono matched, so a retry through another spelling of the path is replayed
 * or refused (422), never run again. The middleware carries `drain(timeoutMs?)`: call it at
 * shutdown to wait for final writes still retrying in the background (it resolves with how
 * many are left).
 */
export function idempotency(
  options: HonoIdempotencyOptions,
): MiddlewareHandler<{ Variables: IdempotencyVariables }> & Pick<IdempotencyHandler, 'drain'> {
  const handler = createIdempotencyHandler<Context>(options);
  // Hono's own helpers hide a throw of their callback but for a log line (see
  // `watchHelperFailures`): watched from now on, before any request.
  watchHelperFailures();
  const waits = options.wait !== undefined && options.wait !== false;
  // Once per middleware: a route that uses Hono's helpers uses them for every request.
  let helperWarned = false;
  const warnHelper = () => {
    helperWarned = true;
    const listener =
      options.onWarning ?? ((message: string) => console.warn(`[@idem/hono] ${message}`));
    // A broken warning listener must not change an answer, nor (rejecting) crash the process.
    callListener(() => listener(HONO_HELPER_WARNING));
  };
  const middleware: MiddlewareHandler<{ Variables: IdempotencyVariables }> =
    async function idempotencyMiddleware(c, next) {
      const request = c.req.raw;
      const route = matchedRoute(c);
      // Stops a bounded wait once the client left. On @hono/node-server it follows the Node
      // response (see `clientSignal`), made only when a wait may need it: `request.signal`
      // would make the Web `Request` there, and never abort when made after the client left.
      const signal = waits || !nodeRequestOf(c) ? { signal: clientSignal(c) } : {};
      /** The body as read from the Node request (@hono/node-server), if it was. */
      const peeked: { body?: RequestBody } = {};
      const decision = await handler.begin({
        native: c,
        method: request.method,
        url: request.url,
        ...(route === undefined ? {} : { route }),
        header: (name) => request.headers.get(name) ?? undefined,
        ...signal,
        readBody: (limit) => readBody(c, limit, peeked),
      });
      if (decision.action === 'pass') return next();
      if (decision.action === 'respond') {
        answerWith(c, decision.response);
        return;
      }
      const { recorder } = decision;
      // Judged where the handler starts (see the recorder's `lateStart`): past the lease's
      // runway since the acquisition, the key is given back and 503 answered instead.
      const late = recorder.lateStart();
      if (late) {
        answerWith(c, (await late).response);
        return;
      }
      c.set('idempotency', recorder.context);
      recorders.set(c, recorder);
      if (peeked.body) offerBodyToHono(c, peeked.body);
      let response: Response;
      // A logger put on console.error since would hide a helper's catch that comes before the
      // response does (a callback that throws before its first await): the watch back on top.
      rewatchConsoleError();
      try {
        // An answer that goes out while the handler runs is not the handler's (see below).
        const outside = watchOutside(c);
        let verdict: OutsideVerdict;
        try {
          // Hono turns a throw of the handler into `c.res` (app.onError), recorded by the policy.
          await outside.run(next);
        } finally {
          verdict = outside.verdict();
        }
        // Answered outside (a timeout mounted before this middleware) while the handler ran, and
        // the handler then ran to its end: its side effect most likely happened, but Hono dropped
        // its `Response` (and the answer that went out cannot be read again). Released, a retry
        // would run it a second time: the `answered_outside` marker instead (a 500
        // `outcome-not-recorded` problem to retries). A handler that threw after it goes on as
        // before: `app.onError`'s answer judged by the policy (released under `finalOn2xx`).
        const mark = verdict === 'fulfilled' ? answeredOutsideOf(recorder) : undefined;
        if (mark) {
          await mark(c.res.status);
          return;
        }
        // An inner idempotency()'s own answer: not this execution's outcome, released.
        if (ownAnswer(c, c.res)) {
          await recorder.fail(undefined);
          return;
        }
        if (honoStreamHelper(c, c.res)) {
          if (!helperWarned) warnHelper();
          // A throw of the callback Hono's helper hides: not recorded, released at the end.
          watchHelperBody(c.res.body, () => recorder.failAtEnd());
        }
        // The signal only when the body has to be read as a stream: on @hono/node-server
        // it makes the Web `Request` when nothing has yet, and a whole body needs none.
        response = await recorder.recordResponse(c.res, () => clientSignal(c));
      } catch (error) {
        // Never leave the key held: released, so a retry executes again; but a handler that
        // timeout() overtook and still runs (its throw rejected next() through an onError that
        // rethrows) keeps it held until it settles (see @idem/http's FAIL_AFTER_HELD).
        const failAfterHeld = (recorder as { [FAIL_AFTER_HELD]?: (e: unknown) => Promise<void> })[
          FAIL_AFTER_HELD
        ];
        await (failAfterHeld ? failAfterHeld(error) : recorder.fail(error));
        throw error;
      }
      if (answerMustAbort(response)) {
        if (dropConnection(c)) {
          // Nothing is sent: node-server leaves a response so marked alone. A 500 for upstream
          // middleware that logs the status: the execution failed as far as the client knows.
          c.res = undefined;
          c.res = new Response(null, { status: 500, headers: { [ALREADY_SENT]: '1' } });
          ownAnswers.set(c, c.res);
          return;
        }
        // No connection to drop (Bun, Deno, workers): the store's 503, never the 2xx head.
        response = answerInsteadOfAbort(response);
      }
      // Unset first: assigning over a response merges the old one's headers into the new
      // (`c.res` is the handler's response, merged with upstream's already).
      c.res = undefined;
      c.res = response;
    };
  // A server's shutdown waits for final writes still retrying in the background.
  return Object.assign(middleware, {
    drain: (timeoutMs?: number, options?: Parameters<IdempotencyHandler['drain']>[1]) =>
      handler.drain(timeoutMs, options),
  });
}
