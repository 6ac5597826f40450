import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import { PROBLEM_TYPES } from '@idem/http';
import { headerValue } from '@idem/http/node';
import type { IdempotentOptions } from './options.js';

/**
 * The platforms' own body limit (body-parser's `limit` on Express, `bodyLimit` on Fastify)
 * refuses a body before any interceptor runs, with the platform's 413. For a keyed request to
 * an `@Idempotent()` route whose body the interceptor would read (a method that needs a key),
 * that 413 is answered with idem's `body-too-large` problem instead, as the interceptor answers
 * a body past `maxBodyBytes`; every other request's error goes on to the app's own handling
 * as before (Nest's exception layer and its global filters).
 *
 * Which route a refused request is for: Fastify routes a request before it parses the body, so
 * the route's own error handler (set in an `onRoute` hook, on `@Idempotent()` routes only)
 * knows it. Express parses first (the parsers are application middleware), so an error
 * middleware, added after the routes and before Nest's exception layer, finds the routes the
 * request's path and method match in Express's router. Both know Nest's route handlers by the
 * reflect metadata Nest copies onto them from the controller's method (see {@link markRoutes}).
 */

/** Where {@link markRoutes} leaves a route method's `@Idempotent()` settings, per controller using it. */
const ROUTE_SETTINGS_METADATA = '@idem/nestjs:route-settings';
/** Where `@Get()`, `@Post()`... keep a route's path and method (Nest 11 and 12). */
const PATH_METADATA = 'path';
const METHOD_METADATA = 'method';

/** The `@Idempotent()` settings of every controller that routes to one method (usually one). */
type RouteSettings = ReadonlyArray<IdempotentOptions | false | undefined>;

interface Reflecting {
  getMetadata?(key: unknown, target: object): unknown;
  defineMetadata?(key: unknown, value: unknown, target: object): void;
}
const reflect = Reflect as unknown as Reflecting;
const metadataOf = (key: string, target: unknown): unknown =>
  typeof target === 'function' && typeof reflect.getMetadata === 'function'
    ? reflect.getMetadata(key, target)
    : undefined;

/** A controller as Nest's discovery lists it. */
export interface ControllerClass {
  metatype: unknown;
  name?: unknown;
}

/** Reads a route's `@Idempotent()` settings as the interceptor does (method, then class). */
export type SettingsReader = (
  method: object,
  controller: object,
) => IdempotentOptions | false | undefined;

/**
 * Marks the route methods of `controllers` whose route is `@Idempotent()` on some controller
 * with the settings of every controller that routes to them (a method a base class shares with
 * several controllers is theirs alike). Called before Nest registers the routes: Nest copies a
 * method's metadata onto the handler it gives the platform, which is how that handler is known
 * here. Answers the same settings by Nest's name of a handler (`Controller.method`), for a
 * handler the platform wraps without that metadata (Fastify, a path with a parameter).
 */
export function markRoutes(
  controllers: readonly ControllerClass[],
  read: SettingsReader,
): Map<string, RouteSettings> {
  const byMethod = new Map<object, Array<IdempotentOptions | false | undefined>>();
  const byName = new Map<string, Array<IdempotentOptions | false | undefined>>();
  for (const { metatype, name } of controllers) {
    if (typeof metatype !== 'function') continue;
    const prototype = metatype.prototype as Record<string, unknown> | undefined;
    if (!prototype) continue;
    for (const methodName of routeMethodNames(prototype)) {
      const method = prototype[methodName] as object;
      const settings = read(method, metatype);
      const same = byMethod.get(method) ?? [];
      same.push(settings);
      byMethod.set(method, same);
      const label = `${typeof name === 'string' ? name : metatype.name}.${methodName}`;
      const named = byName.get(label) ?? [];
      named.push(settings);
      byName.set(label, named);
    }
  }
  for (const [method, settings] of byMethod) {
    if (settings.some(Boolean)) reflect.defineMetadata?.(ROUTE_SETTINGS_METADATA, settings, method);
  }
  return byName;
}

/** The names of the methods with a route decorator, own and inherited. */
function routeMethodNames(prototype: object): string[] {
  const names = new Set<string>();
  for (
    let source: object | null = prototype;
    source !== null && source !== Object.prototype;
    source = Object.getPrototypeOf(source) as object | null
  ) {
    for (const name of Object.getOwnPropertyNames(source)) {
      if (name === 'constructor' || names.has(name)) continue;
      const value = Object.getOwnPropertyDescriptor(source, name)?.value as unknown;
      if (
        typeof value === 'function' &&
        metadataOf(PATH_METADATA, value) !== undefined &&
        metadataOf(METHOD_METADATA, value) !== undefined
      )
        names.add(name);
    }
  }
  return [...names];
}

/**
 * Whether a keyed request with this method and these headers to a route of these settings gets
 * its body read by the interceptor: the route is `@Idempotent()` on every controller that
 * routes to it, and its handler needs the request's key (see `IdempotencyHandler.bodyLimit`).
 */
export type BodyReader = (
  settings: IdempotentOptions,
  method: string,
  headers: IncomingHttpHeaders,
) => boolean;

function readsBody(
  settings: RouteSettings | undefined,
  method: string,
  headers: IncomingHttpHeaders,
  reads: BodyReader,
): boolean {
  return (
    settings !== undefined &&
    settings.length > 0 &&
    settings.every((one) => one !== undefined && one !== false && reads(one, method, headers))
  );
}

/** The settings {@link markRoutes} left for the handler Nest registered, or undefined. */
function settingsOf(
  handler: unknown,
  byName: ReadonlyMap<string, RouteSettings>,
): RouteSettings | undefined {
  const marked = metadataOf(ROUTE_SETTINGS_METADATA, handler);
  if (Array.isArray(marked)) return marked;
  // Nest's route handlers carry their method's route metadata: one without it here is a route
  // that is not idempotent (none of ours then).
  if (metadataOf(METHOD_METADATA, handler) !== undefined) return undefined;
  const name = (handler as { name?: unknown } | null)?.name;
  return typeof name === 'string' && name.includes('.') ? byName.get(name) : undefined;
}

const PROBLEM_BODY = Buffer.from(
  JSON.stringify({
    type: PROBLEM_TYPES.bodyTooLarge,
    title: 'Request body too large',
    status: 413,
    detail: 'The request body exceeds the configured limit',
  }),
);
const PROBLEM_HEADERS = {
  'cache-control': 'no-store',
  'content-type': 'application/problem+json',
} as const;

interface FastifyRouteLike {
  handler?: unknown;
  errorHandler?: FastifyErrorHandler;
}
type FastifyErrorHandler = (
  this: unknown,
  error: unknown,
  request: { method: string; headers: IncomingHttpHeaders },
  reply: {
    code(status: number): unknown;
    header(name: string, value: string): unknown;
    send(payload: unknown): unknown;
  },
) => unknown;
interface FastifyLike {
  addHook(name: 'onRoute', hook: (route: FastifyRouteLike) => void): unknown;
}

/**
 * Fastify: an `onRoute` hook that gives each `@Idempotent()` route an error handler which
 * answers Fastify's own body limit (`FST_ERR_CTP_BODY_TOO_LARGE`) refusing a keyed request the
 * interceptor would read with the `body-too-large` problem. Every other error, and that one for
 * any other request, goes on as before: to the route's own handler, else (thrown) to the
 * instance's (Nest's exception layer). Only an error reaches it: no cost to any other request.
 * Added before Nest registers its routes (when the module's service is made).
 */
export function answerFastifyBodyLimit(
  fastify: FastifyLike,
  byName: ReadonlyMap<string, RouteSettings>,
  reads: BodyReader,
): void {
  fastify.addHook('onRoute', (route) => {
    const settings = settingsOf(route.handler, byName);
    if (!settings?.some(Boolean)) return;
    const own = route.errorHandler;
    route.errorHandler = function idempotencyBodyLimit(error, request, reply) {
      if (
        (error as { code?: unknown } | null)?.code === 'FST_ERR_CTP_BODY_TOO_LARGE' &&
        readsBody(settings, request.method, request.headers, reads)
      ) {
        reply.code(413);
        for (const [name, value] of Object.entries(PROBLEM_HEADERS)) reply.header(name, value);
        reply.send(PROBLEM_BODY);
        return;
      }
      if (own) return own.call(this, error, request, reply);
      if (error instanceof Error) throw error;
      // A thrown value that is no Error would be sent as a payload: a rejected promise is how
      // Fastify hands any value on as an error, to the instance's handler.
      return Promise.reject(error);
    };
  });
}

interface ExpressLayerLike {
  route?: { stack?: ReadonlyArray<{ method?: string; handle?: unknown }> };
  match?(path: string): boolean;
}
interface ExpressLike {
  router?: { stack?: readonly ExpressLayerLike[] };
  _router?: { stack?: readonly ExpressLayerLike[] };
  use(handler: (...args: never[]) => void): unknown;
}
type ExpressRequest = IncomingMessage & { url: string; method: string };

/**
 * The Nest route handlers Express's router has for the request's path and method, in order;
 * undefined when the path is not one this reads as the router does (an absolute-form target, a
 * character the router's URL parser escapes, an escape it cannot decode).
 */
function expressHandlers(app: ExpressLike, request: ExpressRequest): unknown[] | undefined {
  const stack = (app.router ?? app._router)?.stack;
  const url = request.url;
  if (!Array.isArray(stack) || typeof url !== 'string' || !url.startsWith('/')) return undefined;
  const end = url.search(/[?#]/);
  const path = end === -1 ? url : url.slice(0, end);
  // biome-ignore lint/suspicious/noControlCharactersInRegex: what the URL parser escapes
  if (/[\u0000-\u0020\u007f-\uffff]/.test(path)) return undefined;
  const method = request.method.toLowerCase();
  const handlers: unknown[] = [];
  for (const layer of stack) {
    if (!layer?.route || typeof layer.match !== 'function') continue;
    let matched: boolean;
    try {
      matched = layer.match(path);
    } catch {
      return undefined;
    }
    if (!matched) continue;
    for (const one of layer.route.stack ?? []) {
      if (one.method !== undefined && one.method !== method) continue;
      // Nest's route handlers carry their method's route metadata; middleware does not.
      if (metadataOf(METHOD_METADATA, one.handle) !== undefined) handlers.push(one.handle);
    }
  }
  return handlers;
}

/**
 * Express: an error middleware, added after Nest's routes and before its exception layer
 * (in the module's `onModuleInit`), that answers body-parser's own limit
 * (`entity.too.large`) refusing a keyed request the interceptor would read with the
 * `body-too-large` problem: when every Nest route the request's path and method match in
 * Express's router is `@Idempotent()` and reads it. Every other error goes on (`next(error)`)
 * to the app's handling as before. Express calls it for errors only.
 */
export function answerExpressBodyLimit(
  app: ExpressLike,
  byName: ReadonlyMap<string, RouteSettings>,
  reads: BodyReader,
): void {
  app.use(function idempotencyBodyLimit(
    error: unknown,
    request: ExpressRequest,
    response: ServerResponse,
    next: (error?: unknown) => void,
  ) {
    const refused = error as { type?: unknown; status?: unknown } | null;
    if (refused?.type === 'entity.too.large' && refused.status === 413 && !response.headersSent) {
      const handlers = expressHandlers(app, request);
      if (
        handlers !== undefined &&
        handlers.length > 0 &&
        handlers.every((handler) =>
          readsBody(settingsOf(handler, byName), request.method, request.headers, reads),
        )
      ) {
        response.statusCode = 413;
        for (const [name, value] of Object.entries(PROBLEM_HEADERS))
          response.setHeader(name, value);
        response.setHeader('content-length', PROBLEM_BODY.length);
        response.end(PROBLEM_BODY);
        return;
      }
    }
    next(error);
  } as never);
}

/** `IdempotencyHandler.bodyLimit` of a route's handler, as a {@link BodyReader}. */
export function bodyReader(
  handlerFor: (settings: IdempotentOptions) => {
    bodyLimit(request: { method: string; header(name: string): string | undefined }): unknown;
  },
): BodyReader {
  return (settings, method, headers) =>
    handlerFor(settings).bodyLimit({ method, header: (name) => headerValue(headers, name) }) !==
    undefined;
}
