import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { Readable } from 'node:stream';
import type { RequestBody } from '@idem/http';
import {
  headerValue,
  keptBytesBody,
  nodeRequestBody,
  recordServerResponse,
  requestUrl,
  sendDecisionResponse,
  tappedInstead,
} from '@idem/http/node';
import {
  type CallHandler,
  type ExecutionContext,
  Inject,
  Injectable,
  type NestInterceptor,
  StreamableFile,
} from '@nestjs/common';
import { HttpAdapterHost, Reflector } from '@nestjs/core';
import { NEVER, Observable, type Subscription } from 'rxjs';
import { HandlerRun, handlerRuns, recorderHeldForHandler } from './handler-run.js';
import { IdempotencyService } from './idempotency-service.js';
import { IDEMPOTENT_METADATA, type IdempotentOptions, type NestHttpRequest } from './options.js';
import { routePattern } from './route-pattern.js';

/** Where `@Version()` and `@Controller({ version })` keep a route's version (Nest 11 and 12). */
const VERSION_METADATA = '__version__';
/** Where `@Controller({ host })` keeps the controller's host constraint (Nest 11 and 12). */
const HOST_METADATA = 'host';

/** Where Nest keeps a handler's parameter decorators, and `@Res({ passthrough })` (11 and 12). */
const ROUTE_ARGS_METADATA = '__routeArguments__';
const RESPONSE_PASSTHROUGH_METADATA = '__responsePassthrough__';
/** `RouteParamtypes.RESPONSE` and `RouteParamtypes.NEXT`. */
const RESPONSE_PARAMTYPES = new Set([1, 2]);

/** The property key each handler was found under on its controller (see `handlerKey`). */
const handlerKeys = new WeakMap<object, PropertyKey | null>();

/**
 * The property key of `handler` on the controller's prototype chain: Nest keeps a route's
 * argument metadata under it, which a method decorator that wraps the method (tracing, logging:
 * `descriptor.value = function (...args) {...}`) leaves apart from the function's name (rev32f).
 * The function's name when it is not found there.
 */
function handlerKey(controller: { prototype?: unknown }, handler: object): PropertyKey | undefined {
  let key = handlerKeys.get(handler);
  if (key === undefined) {
    key = null;
    for (
      let source = controller.prototype as object | null | undefined;
      key === null && source && source !== Object.prototype;
      source = Object.getPrototypeOf(source) as object | null
    ) {
      for (const own of Reflect.ownKeys(source)) {
        if (own === 'constructor') continue;
        const descriptor = Object.getOwnPropertyDescriptor(source, own);
        if (descriptor && 'value' in descriptor && descriptor.value === handler) {
          key = own;
          break;
        }
      }
    }
    handlerKeys.set(handler, key);
  }
  if (key !== null) return key;
  const name = (handler as { name?: unknown }).name;
  return typeof name === 'string' && name !== '' ? name : undefined;
}

/**
 * Whether Nest leaves the response to the handler (`@Res()` or `@Next()` without `passthrough`,
 * as Nest's `isResponseHandled` judges it): metadata on the controller class (or the class it
 * inherits the method from), under the method's property key.
 */
function handlerOwnsResponse(controller: unknown, handler: unknown): boolean {
  const reflect = Reflect as unknown as {
    getMetadata?(key: unknown, target: object, property?: PropertyKey): unknown;
  };
  if (typeof reflect.getMetadata !== 'function' || typeof controller !== 'function') return false;
  if (typeof handler !== 'function') return false;
  const name = handlerKey(controller, handler);
  if (name === undefined) return false;
  const args = reflect.getMetadata(ROUTE_ARGS_METADATA, controller, name);
  if (typeof args !== 'object' || args === null) return false;
  const takesResponse = Object.keys(args).some((key) =>
    RESPONSE_PARAMTYPES.has(Number(key.split(':')[0])),
  );
  return takesResponse && !reflect.getMetadata(RESPONSE_PASSTHROUGH_METADATA, controller, name);
}

type PlatformRequest = NestHttpRequest & { originalUrl?: string; idempotency?: unknown };
/** Express's `Response` is the Node response; Fastify's reply holds it as `raw`. */
type PlatformResponse = ServerResponse & {
  raw?: ServerResponse;
  hijack?: () => void;
  getHeaders?: () => Record<string, unknown>;
};

/**
 * The body for the fingerprint: as `nodeRequestBody` reads it from the Node request (the
 * bytes kept as `req.rawBody` first, else the parsed body, or the bytes read and put back). On
 * Fastify, Nest's `rawBody: true` keeps the bytes on the Fastify request, not on the Node
 * one: when a parser ran, those bytes (a Buffer only) are fingerprinted first too, whatever
 * the type (a parsed form, or JSON with a repeated member name, loses what tells different
 * bodies apart: see `bodyFromParsed`), and refused as on Express when they are not as many
 * as the Content-Length of an uncompressed body says (see `keptBytesBody`).
 */
async function bodyOf(
  raw: IncomingMessage,
  request: PlatformRequest,
  limit: number,
): Promise<RequestBody> {
  if ((request as unknown) !== raw && request.body !== undefined) {
    const kept = (request as { rawBody?: unknown }).rawBody;
    const body = keptBytesBody(raw, kept, limit, 'request.rawBody');
    if (body !== undefined) return tappedInstead(raw, limit, body, kept as Uint8Array);
  }
  return nodeRequestBody(raw, request.body, limit);
}

/** Framing headers of the reply that must not frame a body written in their place. */
const FRAMING_HEADERS: ReadonlySet<string> = new Set(['content-length', 'transfer-encoding']);

/**
 * Fastify: the headers the app's hooks set with `reply.header()` (a request id, security
 * headers: what `@fastify/helmet` and the like do in `onRequest`) are the reply's until it
 * sends them, and a hijacked reply never does: they are put on the Node response before an
 * answer is written there, as Express middleware's `res.setHeader()` already is. The answer's
 * own headers (the recorded response's, or those of one of the library's answers) are set
 * after them and win a name both have; the reply's framing headers are left out.
 */
function carryReplyHeaders(response: PlatformResponse, res: ServerResponse): void {
  if (typeof response.getHeaders !== 'function' || res.headersSent) return;
  for (const [name, value] of Object.entries(response.getHeaders())) {
    if (value === undefined || FRAMING_HEADERS.has(name.toLowerCase())) continue;
    res.setHeader(name, value as string | number | readonly string[]);
  }
}

/**
 * A stream the handler answers with that fails midway must abort the response: ended instead
 * (as `StreamableFile`'s default error handler does on Nest 12.0 once headers are out), the
 * truncated body would be recorded as a success. Registered before Nest's own listener (added
 * when it sends the value), this one runs first; Nest's then finds the response destroyed.
 */
function abortOnStreamError(value: unknown, res: ServerResponse): void {
  const stream = value instanceof StreamableFile ? value.getStream() : value;
  if (stream instanceof Readable) {
    stream.once('error', (error) => {
      if (res.headersSent && !res.writableEnded) res.destroy(error);
    });
  }
}

/**
 * The handler failed after its response started (a `@Res()` handler that wrote its head and
 * part of its body, a `pipeline` into the response that broke): Nest's exception filter ends
 * a response whose head went out, and the part written would be recorded as a success and
 * replayed to every retry. It is aborted instead: never recorded, the key is released (the
 * handler failed), and its client sees a broken response, not a complete one.
 */
function abortStartedResponse(res: ServerResponse, error: unknown): void {
  if (res.headersSent && !res.writableEnded)
    res.destroy(error instanceof Error ? error : undefined);
}

type EventMethod = (event: string | symbol, listener: (...args: unknown[]) => void) => unknown;
/** The listener methods of the request's socket that {@link connectionAsRecorded} sends to the response for `'close'`. */
const LISTENER_METHODS: ReadonlySet<PropertyKey> = new Set([
  'on',
  'once',
  'addListener',
  'prependListener',
  'prependOnceListener',
  'off',
  'removeListener',
]);

/**
 * The request's socket as the recorded response sees it: alive until the response is.
 *
 * Nest (its router and both platform adapters) learns that the client left from the request's
 * socket (`req.socket.destroyed`, its `'close'`), not from the response: a body the handler
 * answers after the client left is destroyed unsent (`StreamableFile`), not read (an async
 * iterable) or unsubscribed (an Observable), and the response is never ended, so its outcome is
 * never recorded and the key stays held until its lease runs out. `recordServerResponse` keeps
 * the response alive while it records (`destroyed` reads false, `'close'` waits for the end),
 * and `res.socket` reads null so that code watching the response's socket looks at the
 * response. For the request's socket, read after the client left, this view answers
 * `destroyed` and `'close'` listeners with the response's, and everything else with the socket's.
 * Whether the body still ended in time was a race on Node 20; on Node 24 it never does.
 */
function connectionAsRecorded(request: IncomingMessage, res: ServerResponse): void {
  const own = Object.getOwnPropertyDescriptor(request, 'socket');
  if (!own || !('value' in own)) return;
  let socket = own.value as Socket | null;
  let view: Socket | undefined;
  const bound = new WeakMap<object, unknown>();
  const viewOf = (target: Socket): Socket =>
    new Proxy(target, {
      get(on, name) {
        if (name === 'destroyed') return res.destroyed;
        const value = Reflect.get(on, name, on) as unknown;
        if (typeof value !== 'function') return value;
        if (LISTENER_METHODS.has(name)) {
          return (event: string | symbol, listener: (...args: unknown[]) => void) => {
            const method = (event === 'close' ? res : on)[name as 'on'] as EventMethod;
            method.call(event === 'close' ? res : on, event, listener);
            return view;
          };
        }
        let fn = bound.get(value);
        if (!fn) {
          fn = (value as (...args: unknown[]) => unknown).bind(on);
          bound.set(value, fn);
        }
        return fn;
      },
    });
  Object.defineProperty(request, 'socket', {
    configurable: true,
    enumerable: own.enumerable ?? true,
    // The view only while the socket is gone and the response, as recorded, is not.
    get: () => {
      if (!socket?.destroyed || res.destroyed) return socket;
      view ??= viewOf(socket);
      return view;
    },
    set: (next: Socket | null) => {
      socket = next;
      view = undefined;
    },
  });
}

/**
 * Runs the routes marked with `@Idempotent()` through `@idem/http`. It runs after the guards
 * (so `request.user` is set) and before pipes and the handler. A replay or one of the
 * library's own answers (400, 409, 422, 503...) is written to the Node response as recorded,
 * byte for byte, and the route is not run: Nest sends nothing more for it (the observable
 * never emits, so interceptors around this one see no value for such a request). A run is
 * recorded where every platform writes its answer, the Node response: JSON, a
 * `StreamableFile`, an SSE stream or a `@Res()` write are recorded as they went out.
 */
@Injectable()
export class IdempotencyInterceptor implements NestInterceptor {
  @Inject(IdempotencyService) private readonly service!: IdempotencyService;
  @Inject(Reflector) private readonly reflector!: Reflector;
  @Inject(HttpAdapterHost) private readonly adapterHost!: HttpAdapterHost;

  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    if (context.getType() !== 'http') return next.handle();
    const route = this.reflector.getAllAndOverride<IdempotentOptions | false | undefined>(
      IDEMPOTENT_METADATA,
      [context.getHandler(), context.getClass()],
    );
    if (route === undefined || route === false) return next.handle();
    const operation = route.operation ?? this.#operationOf(context);
    const http = context.switchToHttp();
    const request = http.getRequest<PlatformRequest>();
    const response = http.getResponse<PlatformResponse>();
    // By hand rather than with operators, which the rxjs root entry has only since 7.2.
    return new Observable((subscriber) => {
      let inner: Subscription | undefined;
      // Aborted when the subscriber goes (an outer interceptor answered, a timeout): stops a
      // bounded wait (`wait`) at once, and a decision that comes after it is dropped.
      const teardown = new AbortController();
      let handlerRun: HandlerRun | undefined;
      this.#run(
        route,
        operation,
        request,
        response,
        next,
        teardown.signal,
        context.getHandler(),
        context.getClass(),
      ).then(
        ({ result, res, run }) => {
          if (subscriber.closed) return;
          handlerRun = run;
          const subscribe = () =>
            result.subscribe({
              next: (value) => {
                run?.answered();
                if (res) abortOnStreamError(value, res);
                subscriber.next(value);
              },
              error: (error: unknown) => {
                run?.answered();
                if (run) run.closed = true;
                if (res) abortStartedResponse(res, error);
                subscriber.error(error);
              },
              complete: () => {
                run?.answered();
                if (run) run.closed = true;
                subscriber.complete();
              },
            });
          inner = run ? handlerRuns.run(run, subscribe) : subscribe();
        },
        (error: unknown) => subscriber.error(error),
      );
      return () => {
        // An interceptor outside this one gave up (a timeout) while the handler still runs.
        handlerRun?.answered();
        if (handlerRun) handlerRun.closed = true;
        teardown.abort(new Error('The request was answered before its idempotency decision'));
        inner?.unsubscribe();
      };
    });
  }

  /**
   * The route pattern Nest matched, and the version of the handler and the host constraint of
   * its controller when it has them: with header or media-type versioning, handlers of
   * several versions share one path, and with `@Controller({ host })` controllers of several
   * hosts do; a key taken on one must not replay its answer to a request another serves.
   */
  #operationOf(context: ExecutionContext): (request: NestHttpRequest) => string {
    const version = this.reflector.getAllAndOverride<unknown>(VERSION_METADATA, [
      context.getHandler(),
      context.getClass(),
    ]);
    const host = this.reflector.get<unknown>(HOST_METADATA, context.getClass());
    let suffix = '';
    if (version !== undefined) {
      const label = (one: unknown) => (typeof one === 'string' ? one : 'neutral');
      suffix += ` version=${(Array.isArray(version) ? version : [version]).map(label).join(',')}`;
    }
    let perHost = false;
    if (host !== undefined && host !== null) {
      const hosts: unknown[] = Array.isArray(host) ? host : [host];
      // A string as written, a RegExp as its source and flags (`/^(.+)\.example\.com$/i`).
      suffix += ` host=${hosts.map(String).join(',')}`;
      // A host option with a parameter (`:tenant.example.com`) or a RegExp serves several
      // hosts (tenants, shops) with one handler: the host the request came to is named too,
      // or a key taken on one tenant's host would replay its answer on another's whenever
      // their principals are alike (user ids numbered per tenant).
      perHost = hosts.some((one) => typeof one !== 'string' || /[:*{(]/.test(one));
    }
    if (suffix === '') return routePattern;
    if (perHost)
      return (request) => `${routePattern(request)}${suffix} hostname=${this.#hostname(request)}`;
    return (request) => `${routePattern(request)}${suffix}`;
  }

  /** The host name Nest matched the request's host option against (lower-cased). */
  #hostname(request: NestHttpRequest): string {
    const adapter = this.adapterHost?.httpAdapter as
      | { getRequestHostname?: (request: unknown) => unknown }
      | undefined;
    const matched =
      typeof adapter?.getRequestHostname === 'function'
        ? adapter.getRequestHostname(request)
        : undefined;
    const name =
      typeof matched === 'string'
        ? matched
        : String(request.headers.host ?? '').replace(/:\d*$/, '');
    return name.toLowerCase();
  }

  async #run(
    route: IdempotentOptions,
    operation: string | ((request: NestHttpRequest) => string),
    request: PlatformRequest,
    response: PlatformResponse,
    next: CallHandler,
    signal: AbortSignal,
    handler: unknown,
    controller: unknown,
  ): Promise<{ result: Observable<unknown>; res?: ServerResponse; run?: HandlerRun }> {
    const raw: IncomingMessage = request.raw ?? (request as unknown as IncomingMessage);
    let decision = await this.service.handlerFor(route).begin({
      signal,
      native: request,
      method: request.method,
      url: requestUrl(request.originalUrl ?? request.url),
      route: typeof operation === 'string' ? operation : operation(request),
      header: (name) => headerValue(raw.headers, name),
      // Parsed by the platform (JSON, text, a raw parser), or read and put back.
      readBody: (limit) => bodyOf(raw, request, limit),
    });
    if (signal.aborted) {
      // Nobody subscribes any more (an outer interceptor answered while this one waited or
      // read the body): nothing runs and nothing is written; a key just taken is released at
      // once, not held with nothing running until its lease runs out.
      if (decision.action === 'execute') {
        await decision.recorder.fail(signal.reason);
      }
      return { result: NEVER };
    }
    if (decision.action === 'pass') return { result: next.handle() };
    const res = response.raw ?? response;
    // Judged where the handler starts (see the recorder's `lateStart`): past the lease's
    // runway since the acquisition, the key is given back and 503 answered instead.
    const late = decision.action === 'execute' ? decision.recorder.lateStart() : undefined;
    if (late) decision = await late;
    if (decision.action === 'respond') {
      // Fastify: the reply is ours to write (Fastify neither sends nor warns about it), with
      // the headers its hooks set on it.
      if (response.hijack) {
        carryReplyHeaders(response, res);
        response.hijack();
      }
      await sendDecisionResponse(res, decision);
      return { result: NEVER };
    }
    request.idempotency = decision.recorder.context;
    // The handler (tracked by `@Idempotent()`) reports its calls to `run`, through the async
    // context it is called in: an answer sent while a call's work is still pending (an
    // interceptor between this one and the handler timed out) goes out, but the key stays
    // held until that work ended.
    const run = new HandlerRun();
    const { recorder } = decision;
    // Only calls of the function Nest calls for the route, on an instance Nest calls it on,
    // are the request's (see `calledAs`).
    run.handler = handler;
    run.instances = this.service.controllerInstances(controller);
    run.followObservables = this.service.followObservables;
    run.ownsResponse = handlerOwnsResponse(controller, handler);
    run.leaseSignal = () => recorder.context.signal;
    // The handler's work, while it runs, is never a stuck body to the recorder's silence
    // watch (a client that left past the head, a `@Res()` handler still working): held.
    // Not for the key: an answer that overtook the work waits for it (`recorderHeldForHandler`),
    // and the work may be what the handler only started (its own answer releases at once).
    run.onPending = (pending) => recorder.holdWhile(pending, { keepKey: false });
    // Judged again where Nest calls the handler (a tracked one, `@Idempotent()`'s).
    run.judgeStart(() =>
      recorder.lateStart()?.then((refusal) => {
        if (response.hijack) {
          carryReplyHeaders(response, res);
          response.hijack();
        }
        return sendDecisionResponse(res, refusal);
      }),
    );
    recordServerResponse(res, recorderHeldForHandler(recorder, run, res));
    connectionAsRecorded(raw, res);
    return { result: handlerRuns.run(run, () => next.handle()), res, run };
  }
}
