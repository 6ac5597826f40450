import { constants as http2Constants } from 'node:http2';
import type { Readable } from 'node:stream';
import { invalidTypeInput, isThenable, shownInput } from '@idem/core';
import {
  createIdempotencyHandler,
  type HttpIdempotencyOptions,
  type IdempotencyContext,
  type IdempotencyDecision,
  type IdempotencyHandler,
  PROBLEM_TYPES,
  type ProblemType,
  type ResponseRecorder,
} from '@idem/http';
import {
  chunkedFraming,
  clientLeftSignal,
  decisionStatus,
  decisionTrailers,
  destroyBroken,
  forgetRemovedCoding,
  insideHeld,
  recordServerResponse,
  runHeld,
  whenEndedInside,
  wholeDecisionResponse,
} from '@idem/http/node';
import type {
  FastifyInstance,
  FastifyPluginCallback,
  FastifyReply,
  FastifyRequest,
  HookHandlerDoneFunction,
  RouteOptions,
} from 'fastify';
import { BodyTimeoutError } from './body-tap.js';
import { FastifyIncoming, framedEmpty } from './fastify-incoming.js';

/** Options of the {@link idempotency} plugin: those of `@idem/http`, with hooks that get the Fastify request. */
export interface FastifyIdempotencyOptions extends HttpIdempotencyOptions<FastifyRequest> {
  /**
   * Longest wait, in milliseconds from `preHandler`, for the rest of a body that is not all
   * in yet (an upload a parser or a `preParsing` stream leaves to the route): past it the
   * request gets 408 (`body-timeout`) and its connection is closed; nothing was run or
   * stored. A positive number of milliseconds, at most 2_147_483_647 (about 24.8 days, the
   * longest timer Node keeps). @default 30_000
   */
  bodyTimeoutMs?: number;
}

/** Default of {@link FastifyIdempotencyOptions.bodyTimeoutMs}. */
const BODY_TIMEOUT_MS = 30_000;
/** Longest {@link FastifyIdempotencyOptions.bodyTimeoutMs}: Node fires longer timers at once. */
const MAX_TIMEOUT_MS = 2 ** 31 - 1;
/**
 * Longest time the rest of a body refused past its limit (413) is read and dropped after the
 * answer, so that the connection can serve a next request: then the connection is closed.
 */
const DRAIN_MS = 5_000;

function bodyTimeoutOf(value: unknown, name: string): number {
  if (value === undefined) return BODY_TIMEOUT_MS;
  if (!(typeof value === 'number' && value > 0 && value <= MAX_TIMEOUT_MS))
    throw invalidTypeInput(
      `${name} must be a positive, finite number of milliseconds, at most ${MAX_TIMEOUT_MS} (the longest timer Node keeps, about 24.8 days); got ${shownInput(value)}`,
    );
  return value;
}

/**
 * Route-level setting, under `config.idempotency` of a route: `false` turns idempotency off
 * for the route; an object overrides the plugin's options for it (the store stays the
 * plugin's).
 */
export type RouteIdempotency = false | Partial<Omit<FastifyIdempotencyOptions, 'store'>>;

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Route-level idempotency settings of `@idem/fastify`. */
    idempotency?: RouteIdempotency;
  }
  interface FastifyRequest {
    /** Key, fence and abort signal of the execution; null when the request was not subject to idempotency. */
    idempotency: IdempotencyContext | null;
  }
}

/**
 * The request as the plugin describes it to `@idem/http` once made (see `onRequest`); false
 * when idempotency is off for it, null until looked at.
 */
const kIncoming = Symbol('@idem/fastify incoming');
/**
 * Where the plugin's `onRoute` hook leaves, on a route's `config`, the name of the constraints
 * Fastify routes it by (`constraints: { version, host, ... }`), for its operation (see
 * {@link constraintsName}).
 */
const kConstraints = Symbol('@idem/fastify constraints');
/**
 * Where the `onRoute` hook marks a route it saw (and set up: handler hold, constraints, body
 * limit answer, setting checks). A route registered before the plugin, in its scope, still
 * gets its request hooks (Fastify gives a route the hooks of its scope when it is ready) but
 * was never seen: see {@link uncoveredRoute}.
 */
const kCovered = Symbol('@idem/fastify covered');
/** The recorder of a request the route's handler runs for (see {@link heldWhileRunning}). */
const kRecorder = Symbol('@idem/fastify recorder');
/** Ends the hold of a handler's promise (see {@link thenReleasing}). */
const kRelease = Symbol('@idem/fastify release');
/**
 * Whether the held handler's reply was sent to (`SENT`), or returned before anything was sent
 * (`LATER`: its own send ends the hold, see {@link sendHeld}), or neither yet (`NONE`).
 */
const kAnswer = Symbol('@idem/fastify answer');
const NONE = 0;
const SENT = 1;
const LATER = 2;
/**
 * The `send` the reply had before {@link sendHeld} took its place: Fastify's, or a hook's
 * own wrapper of it (a preHandler that sets `reply.send`), which must still run.
 */
const kSend = Symbol('@idem/fastify send');
interface Held {
  [kIncoming]: FastifyIncoming | false | null;
  [kRecorder]: ResponseRecorder | null;
  [kRelease]: ((value?: unknown) => void) | null;
  [kAnswer]: number;
  [kSend]: FastifyReply['send'] | null;
}

/**
 * The route's handler, giving what it returns (its promise) to the recorder's `holdWhile` on a
 * recorded request: while it runs, a client that left does not make its response's silence
 * count, past the head too (a handler that wrote its head through `reply.raw`, or hijacked the
 * reply, and still works is not stuck; a retry would run it beside itself). Same `this`, same
 * arguments, same result. Not the response's end, though: Fastify's `reply` is a thenable
 * settled with it, which a handler returns (`return reply`, its promise then adopting it) or
 * awaits; its own work is over then, and held, a stream silent after its client left kept the
 * key until `maxHoldMs`, its 'close' held back until the lease was lost.
 */
function heldWhileRunning(handler: RouteOptions['handler']): RouteOptions['handler'] {
  return function (this: FastifyInstance, request, reply) {
    const held = request as unknown as Held;
    const recorder = held[kRecorder];
    if (recorder === null) return handler.call(this, request, reply);
    // Before the call: an async handler's `return reply` reads `reply.then` as it returns.
    // biome-ignore lint/suspicious/noThenProperty: Fastify's reply is a thenable already; this wraps its then.
    (reply as { then: FastifyReply['then'] }).then = thenReleasing;
    held[kSend] = reply.send;
    reply.send = sendHeld;
    // Run as the execution's work (see `runHeld`): an answer sent from outside it while it
    // runs (an onRequest hook's timeout) is never taken for its own.
    const result = runHeld(recorder, () => handler.call(this, request, reply));
    if (result !== reply && isThenable(result))
      recorder.holdWhile(
        // A rejection as one: a handler that threw is released, never marked (see the recorder).
        new Promise((resolve, reject) => {
          held[kRelease] = resolve;
          result.then(() => {
            // Returned `reply` before answering (see `thenReleasing`): its promise settles
            // with the response, whoever answered it; its own send ends the hold.
            if (held[kAnswer] !== LATER) resolve(undefined);
          }, reject);
        }),
      );
    return result;
  };
}

/**
 * `reply.then` of a held handler's reply: the handler returned `reply` (its promise adopts it)
 * or awaits the response's end. When it already answered, it no longer works: the hold ends
 * (see {@link heldWhileRunning}), then Fastify's own `then`. When it has not answered yet (it
 * returns `reply` to answer later, from work still running), the hold lasts until its own
 * `reply.send` (see {@link sendHeld}): an answer from outside it meanwhile (an onRequest
 * hook's 504) is not its answer, and its work still runs.
 */
function thenReleasing(
  this: FastifyReply,
  fulfilled: () => void,
  rejected: (error: Error) => void,
): void {
  const held = this.request as unknown as Held;
  const release = held[kRelease];
  if (release !== null) {
    if (held[kAnswer] === NONE && !this.sent) {
      held[kAnswer] = LATER;
      // Its work may answer without `reply.send` (`reply.hijack()` and `reply.raw`): that end,
      // made from its work, is its own answer too (rev34n: the key stayed held to maxHoldMs).
      const recorder = held[kRecorder];
      if (recorder !== null) whenEndedInside(recorder, () => endHold(held));
    } else {
      held[kRelease] = null;
      release();
    }
  }
  (Object.getPrototypeOf(this) as FastifyReply).then.call(this, fulfilled, rejected);
}

/** Ends the hold of a handler that returned `reply` before answering, at its own answer. */
function endHold(held: Held): void {
  const release = held[kRelease];
  if (release === null) return;
  held[kRelease] = null;
  release();
}

/**
 * `reply.send` of a held handler's reply. Once the handler returned `reply` before answering
 * (see {@link thenReleasing}), its own send (made from its work, see `insideHeld`) ends the
 * hold, before the answer goes out (its own answer, judged as such) or after another one went
 * out (Fastify drops it as already sent: its work ran, the key gets the `answered_outside`
 * marker); a send from outside it (a hook's timeout) goes out without ending the hold.
 */
function sendHeld(this: FastifyReply, payload?: unknown): FastifyReply {
  const held = this.request as unknown as Held;
  if (held[kAnswer] === NONE) held[kAnswer] = SENT;
  else if (held[kAnswer] === LATER) {
    const recorder = held[kRecorder];
    if (recorder !== null && insideHeld(recorder)) endHold(held);
  }
  // The reply's own send, a hook's wrapper included (rev34n: the prototype's skipped it).
  return (held[kSend] ?? (Object.getPrototypeOf(this) as FastifyReply).send).call(this, payload);
}

interface Setup {
  handler: IdempotencyHandler<FastifyRequest>;
  bodyTimeoutMs: number;
  /** Under `wait`: a client that leaves while its duplicate waits ends the wait at once. */
  waits: boolean;
}

/** Whether options (merged as a route's are) ask for a bounded wait. */
function waitsIn(options: { wait?: unknown }): boolean {
  return options.wait !== undefined && options.wait !== false;
}

/**
 * The options `@idem/http` takes: without this plugin's own (`bodyTimeoutMs`) and those
 * Fastify's `register` reads (`prefix`, `logLevel`, `logSerializers`), as `@idem/http`
 * refuses an option name it does not know.
 */
function httpOptions(options: FastifyIdempotencyOptions): HttpIdempotencyOptions<FastifyRequest> {
  const {
    bodyTimeoutMs: _bodyTimeoutMs,
    prefix: _prefix,
    logLevel: _logLevel,
    logSerializers: _logSerializers,
    ...rest
  } = options as FastifyIdempotencyOptions &
    Record<'prefix' | 'logLevel' | 'logSerializers', unknown>;
  return rest;
}

const plugin: FastifyPluginCallback<FastifyIdempotencyOptions> = (fastify, options, done) => {
  // A second registration (here or in a parent scope) would throw Fastify's "decorator
  // already present" out of this callback, uncaught, and fail register() only at
  // pluginTimeout: refused at once instead.
  if (fastify.hasRequestDecorator('idempotency')) {
    done(
      new Error(
        '@idem/fastify is already registered on this instance or a parent one (a request decorator named "idempotency" is present): register it once; routes tune it with config.idempotency',
      ),
    );
    return;
  }
  let base: Setup;
  try {
    base = {
      handler: createIdempotencyHandler<FastifyRequest>(httpOptions(options)),
      bodyTimeoutMs: bodyTimeoutOf(options.bodyTimeoutMs, 'bodyTimeoutMs'),
      waits: waitsIn(options),
    };
  } catch (error) {
    // Registration fails with the error (app.register / app.ready reject), not a crash.
    done(error as Error);
    return;
  }
  const perRoute = new WeakMap<object, Setup>();

  function setupOf(route: RouteIdempotency | undefined): Setup | undefined {
    if (route === undefined) return base;
    if (route === false) return undefined;
    if (typeof route !== 'object' || route === null)
      throw invalidTypeInput('config.idempotency must be false or an object of options');
    let setup = perRoute.get(route);
    if (!setup) {
      setup = {
        handler: createIdempotencyHandler<FastifyRequest>(
          httpOptions({ ...options, ...route, store: options.store }),
        ),
        bodyTimeoutMs:
          route.bodyTimeoutMs === undefined
            ? base.bodyTimeoutMs
            : bodyTimeoutOf(route.bodyTimeoutMs, 'config.idempotency.bodyTimeoutMs'),
        waits: waitsIn({ ...options, ...route }),
      };
      perRoute.set(route, setup);
    }
    return setup;
  }

  /**
   * The request for `@idem/http`, false when idempotency is off for it. `copy` (at
   * `onRequest` only, before anyone reads the body): start copying its body.
   */
  function incomingOf(request: FastifyRequest, copy: boolean): FastifyIncoming | false {
    // No route matched: let Fastify answer 404 rather than ask for a key.
    if (request.is404) return false;
    const route = request.routeOptions;
    const setup = setupOf(route.config?.idempotency);
    if (!setup) return false;
    // Routes that share a URL but not their constraints (`version`, `host`) are operations of
    // their own: a key taken on one never replays its answer to a request another serves.
    const config = route.config as { [kConstraints]?: string; [kCovered]?: true } | undefined;
    const constraints =
      config?.[kCovered] === true ? config[kConstraints] : uncoveredRoute(request, setup);
    const incoming = new FastifyIncoming(
      request,
      setup.handler,
      constraints === undefined ? (route.url as string) : `${route.url as string}${constraints}`,
      setup.bodyTimeoutMs,
      setup.waits,
    );
    if (copy) incoming.copyBody();
    return incoming;
  }

  // A route's own settings are checked as it is added (registered after the plugin), so that a
  // bad one fails app.ready() (and listen, inject) rather than its requests with 500s; the
  // error waits for onReady, as app.post() at the top level would otherwise throw it there.
  const routeErrors: Error[] = [];
  fastify.addHook('onRoute', (route) => {
    const constraints = constraintsName(route.constraints);
    // Read back from `request.routeOptions.config`, which Fastify copies from this one.
    route.config = (constraints === undefined
      ? { ...route.config, [kCovered]: true }
      : {
          ...route.config,
          [kConstraints]: constraints,
          [kCovered]: true,
        }) as unknown as typeof route.config;
    const setting = route.config?.idempotency;
    if (setting === false) return;
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    let setup: Setup | undefined;
    try {
      setup = setupOf(setting);
    } catch (error) {
      routeErrors.push(
        invalidTypeInput(
          `@idem/fastify, route ${methods.join(',')} ${route.url}: ${(error as Error).message}`,
          { cause: error },
        ),
      );
      return;
    }
    // Fastify's own body limit (the route's, its parser's) refuses a body before preHandler,
    // with its own 413: the route's error handler, which only an error reaches, answers a
    // keyed request's with the body-too-large problem instead (no cost to any other request).
    if (setup && readsBodies(setup.handler, methods))
      route.errorHandler = answeringBodyLimit(route.errorHandler);
    if (setup) route.handler = heldWhileRunning(route.handler);
  });
  // Routes already there (registered before the plugin) that requests needing a key may reach:
  // named at ready (see `routesBefore`), and, those of this scope, at their first request.
  const earlier = routesBefore(fastify, base.handler);
  fastify.addHook('onReady', (ready) => {
    if (earlier !== undefined && routeErrors.length === 0) warn(notSeenWarning(earlier));
    ready(routeErrors[0]);
  });
  const warn = options.onWarning ?? ((message: string) => fastify.log.warn(message));
  const warned = new WeakSet<object>();
  /**
   * A route registered before the plugin in its scope: keyed and recorded (it has the hooks),
   * but not set up by `onRoute`; warned about once, naming it. Fastify does not tell a request
   * its route's constraints: its operation is its URL alone (undefined answered).
   */
  function uncoveredRoute(request: FastifyRequest, setup: Setup): undefined {
    const route = request.routeOptions;
    const config = route.config as object | undefined;
    // Only for a method its requests are keyed for (not a health check's GET).
    if (
      config !== undefined &&
      !warned.has(config) &&
      readsBodies(setup.handler, [request.method])
    ) {
      warned.add(config);
      warn(
        `@idem/fastify: route ${String(route.method)} ${String(route.url)} was registered before the plugin: its requests are keyed and recorded, but without the plugin's per-route setup (its handler is not held while it runs, its version/host constraints are not part of its key space, a body over its own bodyLimit gets Fastify's 413, its config.idempotency was not checked at ready). Register @idem/fastify before the routes it covers.`,
      );
    }
    return undefined;
  }
  fastify.decorateRequest('idempotency', null);
  fastify.decorateRequest(kIncoming, null);
  fastify.decorateRequest(kRecorder, null);
  fastify.decorateRequest(kRelease, null);
  fastify.decorateRequest(kAnswer, NONE);
  fastify.decorateRequest(kSend, null);
  // onRequest, before any preParsing hook (a decompression one registered before the plugin)
  // can read the Node request: a request with a body starts copying it for the fingerprint,
  // when begin() will read it (idempotency on for the route, a method that needs a key, a
  // key sent), never past maxBodyBytes.
  fastify.addHook('onRequest', (request, _reply, done) => {
    if (mayHaveBody(request)) (request as unknown as Held)[kIncoming] = incomingOf(request, true);
    done();
  });
  // preHandler: after Fastify parsed (and size-limited) the body, before the route handler.
  // A callback hook: no promise of its own besides begin's.
  fastify.addHook('preHandler', (request, reply, done) => {
    let incoming = (request as unknown as Held)[kIncoming];
    if (incoming === null) incoming = incomingOf(request, false);
    if (incoming === false) return done();
    const { handler } = incoming;
    const left = incoming.waits ? clientLeftSignal(reply.raw) : undefined;
    if (left) incoming.signal = left.signal;
    handler.begin(incoming).then(
      (decision) => {
        left?.stop();
        // The copy is used (or was not needed: an invalid key): not held while the route runs.
        (incoming as FastifyIncoming).release();
        try {
          if (decision.action === 'respond' && decisionStatus(decision) === 413) {
            const rest = (incoming as FastifyIncoming).restOfBody();
            if (rest === 'unread') endsUnread(request, reply);
            else if (rest === 'draining')
              boundDrain(request, reply, (incoming as FastifyIncoming).bodyTimeoutMs);
          }
          answer(request, reply, decision, done);
        } catch (error) {
          done(error as Error);
        }
      },
      (error: Error) => {
        left?.stop();
        (incoming as FastifyIncoming).release();
        // Its client left while it waited: nobody to answer, nothing ran (the route must not).
        if (left?.signal.aborted) {
          reply.hijack();
          return;
        }
        if (error instanceof BodyTimeoutError) {
          timedOut(request, reply, error);
          return;
        }
        done(error);
      },
    );
  });
  // A request answered before preHandler (Fastify's 400 for a body that does not parse, 413,
  // 415, a hook's early reply) drops its copy as it ends, not when the request is collected.
  fastify.addHook('onResponse', (request, _reply, done) => {
    const incoming = (request as unknown as Held)[kIncoming];
    if (incoming) incoming.finished();
    done();
  });
  done();
};

/**
 * Framed by the answer's own body alone: a Content-Length or Transfer-Encoding a hook put on
 * the reply before (`onRequest`) would frame a body of another length, or make both framings
 * beside Fastify's own (a desync, or a client waiting for bytes never sent). A whole body
 * gets Fastify's Content-Length; a streamed one keeps a `Transfer-Encoding: chunked` (Node's
 * own framing) over HTTP/1.1 (`anyCoding`: any coding is removed, for a whole body, HTTP/2
 * and an HTTP/1.0 client); any other coding (`gzip`, `gzip, chunked`) is removed, and Node
 * frames the body as if none had been set (chunked for a stream). Only a header that is there
 * is removed: Node frames nothing itself for a name removed once (a stream would end with the
 * connection, a break in it read as an end).
 */
function dropHookFraming(reply: FastifyReply, anyCoding: boolean): void {
  if (reply.hasHeader('content-length') || reply.raw.hasHeader('content-length'))
    reply.removeHeader('content-length');
  const coding = reply.getHeader('transfer-encoding') ?? reply.raw.getHeader('transfer-encoding');
  if (coding !== undefined && (anyCoding || !/^\s*chunked\s*$/i.test(String(coding)))) {
    reply.removeHeader('transfer-encoding');
    // Fastify removes it from the Node response too, which Node then frames by nothing (a
    // stream ended by the connection's close under a keep-alive head).
    forgetRemovedCoding(reply.raw);
  }
}

function answer(
  request: FastifyRequest,
  reply: FastifyReply,
  decision: IdempotencyDecision,
  done: HookHandlerDoneFunction,
): void {
  if (decision.action === 'pass') {
    done();
    return;
  }
  if (decision.action === 'respond') {
    // On the reply too, not only on the Response: an onSend hook that replaces the payload
    // must not turn a 409, a 422 or a replay into a 200 without its headers.
    const whole = wholeDecisionResponse(decision);
    // A body without a Content-Type would get Fastify's own: sent as a Response instead.
    if (whole && (!whole.body || hasContentType(whole.headers))) {
      dropHookFraming(reply, true);
      reply.code(whole.status);
      // The reason phrase the first client got (HTTP/1.x only: HTTP/2 has none). Fastify's
      // `writeHead` passes none, so Node sends the response's `statusMessage`.
      if (whole.reason !== undefined && !http2Stream(request))
        reply.raw.statusMessage = whole.reason;
      for (const [name, value] of whole.headers) reply.header(name, value);
      replayTrailers(request, reply, whole.trailers);
      reply.send(whole.body);
      return;
    }
    // Over HTTP/2 any coding: a connection header there, node:http2 threw at the head and the
    // replay never ended (the client waited on an open stream).
    // To an HTTP/1.0 client too: it cannot read chunked framing (RFC 9112 6.1).
    dropHookFraming(reply, http2Stream(request) !== undefined || !chunkedFraming(reply.raw));
    reply.code(decision.response.status);
    const { statusText } = decision.response;
    if (statusText !== '' && !http2Stream(request)) reply.raw.statusMessage = statusText;
    for (const [name, value] of decision.response.headers) reply.header(name, value);
    // A Web `Response` carries no trailers: Fastify sends the recorded ones after its body.
    replayTrailers(request, reply, decisionTrailers(decision));
    reply.send(
      http2Stream(request) ? destroyedOnBreak(decision.response, reply) : decision.response,
    );
    return;
  }
  // Judged where the route starts (see the recorder's `lateStart`): past the lease's runway
  // since the acquisition, the key is given back and 503 answered instead.
  const late = decision.recorder.lateStart();
  if (late) {
    late.then(
      (refused) => answer(request, reply, refused, done),
      (error: Error) => done(error),
    );
    return;
  }
  request.idempotency = decision.recorder.context;
  (request as unknown as Held)[kRecorder] = decision.recorder;
  // Record at the Node response: every payload Fastify sends (buffers, Node and Web
  // streams, Response objects) ends up there, written chunk by chunk. `reply.sent` reads true
  // once the route ended the response, as without idem, while its end waits for the record:
  // an async route that returns the reply is then done at once, not once the response's
  // 'finish' comes (Fastify's `reply.then` would add its listeners to the Node response).
  recordServerResponse(reply.raw, decision.recorder, { endedWhileHeld: true });
  done();
}

/**
 * HTTP/2: `response` with its body read through, so that a body that breaks once the head is
 * sent (an attached live stream whose execution failed) has its stream reset by
 * `destroyBroken`, with the error and on the next turn, not by Fastify: it would reset it at
 * once, maybe while the session still handles another stream's RST_STREAM (the first client
 * leaving, its app aborting the body then), where node:http2 loops forever
 * (nodejs/node#52952), and with NO_ERROR, which the client takes for a whole body. A body
 * that breaks before the head is left to Fastify (its error answer), as is a client that
 * leaves (Fastify cancels the body on the response's 'close').
 */
function destroyedOnBreak(response: Response, reply: FastifyReply): Response {
  if (response.body === null) return response;
  const source = response.body.getReader();
  const res = reply.raw;
  const body = new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        let read: ReadableStreamReadResult<Uint8Array>;
        try {
          read = await source.read();
        } catch (error) {
          if (!res.headersSent) controller.error(error);
          // Nothing enqueued: Fastify's read waits, and cancels this body once the response
          // is closed.
          else destroyBroken(res, error);
          return;
        }
        if (read.done) controller.close();
        else controller.enqueue(read.value);
      },
      cancel(reason) {
        return source.cancel(reason).catch(() => {});
      },
    },
    // Read only as Fastify reads (after each 'drain'): no chunk read ahead of the client.
    { highWaterMark: 0 },
  );
  const { status, statusText, headers } = response;
  return new Response(body, { status, statusText, headers });
}

/**
 * The recorded trailer fields of a replay, sent after its body with Fastify's `reply.trailer`
 * (it names them in a `Trailer` header and frames the body chunked). Not to a HEAD request,
 * nor to an HTTP/1.0 client that did not ask for chunked framing (`TE: chunked`): those get
 * the body alone, as Node sends a response's trailers to neither.
 */
function replayTrailers(
  request: FastifyRequest,
  reply: FastifyReply,
  trailers: readonly (readonly [string, string])[] | undefined,
): void {
  if (!trailers || trailers.length === 0 || request.raw.method === 'HEAD') return;
  const raw = reply.raw as { useChunkedEncodingByDefault?: boolean };
  if (!http2Stream(request) && raw.useChunkedEncodingByDefault === false) return;
  for (const [name, value] of trailers) {
    try {
      reply.trailer(name, async () => value);
    } catch {
      // A name Fastify refuses as a trailer (never recorded as one by @idem/http).
    }
  }
}

/**
 * 408 for a body whose rest did not come in within `bodyTimeoutMs`: the connection is closed
 * (the rest of the body would otherwise be read as the next request's start).
 */
function timedOut(request: FastifyRequest, reply: FastifyReply, error: BodyTimeoutError): void {
  endsUnread(request, reply);
  sendProblem(
    reply,
    408,
    PROBLEM_TYPES.bodyTimeout,
    'Request body timed out',
    `The rest of the request body did not come in within ${error.timeoutMs} ms; nothing was run or stored`,
  );
}

/** One of the plugin's own problems (`application/problem+json`, never cached), sent. */
function sendProblem(
  reply: FastifyReply,
  status: number,
  type: ProblemType,
  title: string,
  detail: string,
): void {
  reply
    .code(status)
    .header('cache-control', 'no-store')
    .header('content-type', 'application/problem+json')
    .send(Buffer.from(JSON.stringify({ type, title, status, detail })));
}

type RouteErrorHandler = NonNullable<RouteOptions['errorHandler']>;

/** The `done` of {@link answer} for a decision that answers the request (never called then). */
const noDone: HookHandlerDoneFunction = () => {};

/** Whether `handler` reads the body of a keyed request of one of `methods` (needs its key). */
/**
 * The routes already in the router as the plugin registers, for the methods whose requests
 * it keys (a tree as `printRoutes` draws it, per method), or undefined when there are none.
 * The router is the server's: routes of another scope are listed too (the plugin's hooks never
 * reach those: they are not idempotent at all).
 */
function routesBefore(
  fastify: FastifyInstance,
  handler: IdempotencyHandler<FastifyRequest>,
): string | undefined {
  const trees: string[] = [];
  for (const method of fastify.supportedMethods ?? ['POST', 'PATCH', 'PUT', 'DELETE']) {
    if (!readsBodies(handler, [method])) continue;
    const tree = fastify.printRoutes({ method, commonPrefix: false });
    if (tree.trim() !== '' && tree.trim() !== '(empty tree)') trees.push(tree.trimEnd());
  }
  return trees.length === 0 ? undefined : trees.join('\n');
}

function notSeenWarning(routes: string): string {
  return `@idem/fastify was registered after these routes, so its onRoute hook never saw them:\n${routes}\nThose of the plugin's scope are keyed and recorded without its per-route setup (handler hold, version/host constraints in the key space, body limit problem, setting checks at ready); those of other scopes are not idempotent at all. Register @idem/fastify before the routes it covers.`;
}

function readsBodies(handler: IdempotencyHandler<FastifyRequest>, methods: readonly string[]) {
  return methods.some((method) => handler.bodyLimit({ method, header: () => '' }) !== undefined);
}

/**
 * The error handler of an idempotent route (its own, `own`, behind it): Fastify's body limit
 * (`FST_ERR_CTP_BODY_TOO_LARGE`, the route's or its content-type parser's `bodyLimit`, or a
 * body that decodes past it) refusing a request whose body `begin` would read (a method that
 * needs a key, a key sent), before `begin` ran, gets the body-too-large problem that the
 * plugin answers past `maxBodyBytes`, still a 413 and with the connection closed as Fastify
 * closes it: a limit set lower than `maxBodyBytes` stays the limit. As past `maxBodyBytes`,
 * `begin`'s checks before its scope hook come first (a missing or invalid key: 400, the
 * connection still closed). Every other error, and that one for any other request (a key
 * optional and not sent, a method that needs none), goes on as without
 * the plugin: to the route's own handler, else (thrown) to the instance's, Fastify's way to
 * hand an error to the next handler. Called only for errors: nothing of it runs for a
 * request that has none.
 */
function answeringBodyLimit(own: RouteErrorHandler | undefined): RouteErrorHandler {
  return function idempotencyBodyLimit(this: FastifyInstance, error, request, reply) {
    const incoming = (request as unknown as Held)[kIncoming];
    if (
      (error as { code?: unknown } | null)?.code === 'FST_ERR_CTP_BODY_TOO_LARGE' &&
      incoming instanceof FastifyIncoming
    ) {
      // begin's checks before its scope hook come first, as past maxBodyBytes: a missing or
      // invalid key gets its 400 whichever limit refused the body (begin never runs the route
      // of such a request, so the error is Fastify's). (The scope hook is not run: it may
      // need what the app's preValidation or preHandler hooks set, which never ran.)
      const early = incoming.handler.beforeScope(incoming);
      if (early?.action === 'respond') {
        answer(request, reply, early, noDone);
        return;
      }
      if (incoming.awaitsBegin()) {
        sendProblem(
          reply,
          413,
          PROBLEM_TYPES.bodyTooLarge,
          'Request body too large',
          'The request body exceeds the configured limit',
        );
        return;
      }
    }
    if (own) return own.call(this, error, request, reply);
    if (error instanceof Error) throw error;
    // A thrown value that is no Error would be sent as a payload (200), and calling the
    // instance's handler here would leave Fastify's next handler at that same one (called
    // again if it rethrows or sends an Error). Handed on as Fastify hands on an error it
    // caught (see `sendAsError`); else as a rejected promise, which Fastify also takes for an
    // error, but publishes once more on its `fastify.request.handler` tracing channel.
    if (sendAsError(reply, error)) return;
    return Promise.reject(error);
  };
}

/**
 * Fastify's private flag that makes `reply.send(value)` go to the next error handler whatever
 * the value (`kReplyIsError`: Fastify sets it, then sends, wherever it hands on a value a
 * route or hook threw or rejected with), found on the reply by its description; cached, and
 * looked for again on a reply that lacks it (another copy of Fastify).
 */
let replyIsError: symbol | undefined;
const REPLY_IS_ERROR = 'fastify.reply.isError';

/**
 * Sends `value` (no Error) to the reply's next error handler as Fastify sends what a route
 * threw: the flag set, then `reply.send`; false when this Fastify has no such flag, unset, on
 * its reply (then nothing was done). Only on the error path: a request without an error never
 * gets here.
 */
function sendAsError(reply: FastifyReply, value: unknown): boolean {
  const flags = reply as unknown as Record<symbol, unknown>;
  if (replyIsError === undefined || !Object.hasOwn(reply, replyIsError))
    replyIsError = Object.getOwnPropertySymbols(reply).find(
      (symbol) => symbol.description === REPLY_IS_ERROR,
    );
  if (replyIsError === undefined || flags[replyIsError] !== false) return false;
  flags[replyIsError] = true;
  reply.send(value);
  return true;
}

/** The HTTP/2 stream of a request that came over HTTP/2 (Node's compatibility layer). */
function http2Stream(request: FastifyRequest): Http2StreamLike | undefined {
  const raw = request.raw as { httpVersionMajor?: number; stream?: unknown };
  if (!(typeof raw.httpVersionMajor === 'number' && raw.httpVersionMajor >= 2)) return undefined;
  const stream = raw.stream as Http2StreamLike | null | undefined;
  return typeof stream === 'object' && stream !== null && typeof stream.close === 'function'
    ? stream
    : undefined;
}

interface Http2StreamLike {
  readonly closed: boolean;
  readonly destroyed: boolean;
  close(code?: number): void;
  once(event: 'finish', listener: () => void): unknown;
}

/**
 * The answer leaves the rest of the body unread: nothing may read it as the next request.
 * HTTP/1.x: `Connection: close` (Node closes the connection once the answer is written).
 * HTTP/2, where that header is forbidden: once the answer is written, the stream is closed
 * (RST_STREAM NO_ERROR: "stop sending", RFC 9113, 8.1), which leaves the session's other
 * streams alone.
 */
function endsUnread(request: FastifyRequest, reply: FastifyReply): void {
  const stream = http2Stream(request);
  if (stream) closeWhenAnswered(stream);
  else reply.header('connection', 'close');
}

function closeWhenAnswered(stream: Http2StreamLike): void {
  // The stream's own 'finish' (its side written); the response's comes only with the close.
  stream.once('finish', () => {
    if (!stream.closed && !stream.destroyed) stream.close(http2Constants.NGHTTP2_NO_ERROR);
  });
}

/**
 * A 413 whose body the plugin was reading (nobody else read it) and now reads and drops, so
 * that the connection can serve a next request: for at most `DRAIN_MS` (or `bodyTimeoutMs`
 * when shorter) once the answer is written; a body still coming in then has its connection
 * destroyed. Over HTTP/2 the stream is closed once the answer is written instead.
 */
function boundDrain(request: FastifyRequest, reply: FastifyReply, bodyTimeoutMs: number): void {
  const stream = http2Stream(request);
  if (stream) {
    closeWhenAnswered(stream);
    return;
  }
  const raw = request.raw;
  const res = reply.raw;
  let timer: NodeJS.Timeout | undefined;
  const stop = (): void => {
    clearTimeout(timer);
    raw.off('end', stop);
    raw.off('close', stop);
    res.off('finish', arm);
    res.off('close', arm);
  };
  const arm = (): void => {
    res.off('finish', arm);
    res.off('close', arm);
    if (raw.readableEnded || raw.destroyed) {
      stop();
      return;
    }
    timer = setTimeout(
      () => {
        stop();
        if (!raw.readableEnded) raw.socket?.destroy();
      },
      Math.min(DRAIN_MS, bodyTimeoutMs),
    );
  };
  raw.once('end', stop);
  raw.once('close', stop);
  res.once('finish', arm);
  res.once('close', arm);
}

/**
 * The constraints a route is declared with, as a suffix of its operation: ` constraints=` and
 * their names and values as declared, in name order (a `RegExp` host as its source and flags);
 * undefined for a route without any, whose operation stays its URL pattern.
 */
function constraintsName(constraints: unknown): string | undefined {
  if (typeof constraints !== 'object' || constraints === null) return undefined;
  const names = Object.keys(constraints).sort();
  if (names.length === 0) return undefined;
  const values = constraints as Record<string, unknown>;
  const parts = names.map((name) => {
    const value = values[name];
    if (typeof value === 'string' || value instanceof RegExp) return [name, String(value)];
    try {
      // A custom strategy's value as JSON; one JSON cannot hold (a BigInt) as its string.
      return [name, JSON.parse(JSON.stringify(value) ?? 'null') as unknown];
    } catch {
      return [name, String(value)];
    }
  });
  return ` constraints=${JSON.stringify(parts)}`;
}

function hasContentType(headers: readonly (readonly [string, string])[]): boolean {
  for (const [name] of headers) if (name === 'content-type') return true;
  return false;
}

/**
 * Whether the request may have a body, so that its bytes are copied: a framed one
 * (Transfer-Encoding, a Content-Length but 0), or one with no framing header that may still
 * carry one: HTTP/2 (Content-Length is optional there) unless its stream ended with its
 * headers, and `app.inject` with a stream payload. Fastify parses those bodies when they
 * have a Content-Type, and a route may read them off `request.raw` when they have none:
 * either way the bytes count. A request framed without a body ({@link framedEmpty}) is
 * fingerprinted as an empty body, with nothing to copy.
 */
function mayHaveBody(request: FastifyRequest): boolean {
  if (framedEmpty(request)) return false;
  const { headers } = request;
  if (headers['transfer-encoding'] !== undefined || headers['content-length'] !== undefined)
    return true;
  // Typed as Node's request; also light-my-request's and the HTTP/2 compatibility layer's.
  const raw: Readable = request.raw;
  return !raw.readableEnded;
}

/**
 * Fastify 5 plugin that makes POST and PATCH (by default) idempotent by their
 * `Idempotency-Key` header, for every route of the instance it is registered on (it is not
 * encapsulated). Routes tune it with `config: { idempotency: ... }`; handlers find the
 * execution context at `request.idempotency`.
 */
export const idempotency = Object.assign(plugin, {
  [Symbol.for('skip-override')]: true,
  [Symbol.for('fastify.display-name')]: '@idem/fastify',
});
