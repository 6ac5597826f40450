import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import { type IdempotencyDecision, PROBLEM_TYPES } from '@idem/http';
import {
  headerValue,
  requestUrl,
  sendDecisionResponse,
  wholeDecisionResponse,
} from '@idem/http/node';
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
 * middleware, added after the routes and before Nest's exception layer, finds the route that
 * would serve it in Express's router: the first that matches its path and method and lets it
 * through (Nest's version filter, asked without running the route, and its host filter). On
 * both, a request no route would serve (another host than the controller's, another version,
 * an empty path parameter: Nest's 404) is not idem's, nor one whose route is not known here
 * (the app's own Express route first, a host option with a parameter): the app's handling gets
 * it. Both know Nest's route handlers by the reflect metadata Nest copies onto them from the
 * controller's method, per app (see {@link markRoutes}).
 */

/**
 * Where {@link markRoutes} leaves a route method's uses (see {@link RouteUses}): a `WeakMap` from
 * the marking module's service to them. Nest copies a method's metadata onto the handler it
 * registers, the map with it: each app (each service) finds its own marks there and no other's,
 * whichever apps of the process marked the method before, after or in between (nestrev23).
 */
const ROUTE_SETTINGS_METADATA = '@idem/nestjs:route-settings';
/** Where `@Get()`, `@Post()`... keep a route's path and method (Nest 11 and 12). */
const PATH_METADATA = 'path';
const METHOD_METADATA = 'method';
/** Where `@Controller({ host })` keeps the controller's host option (Nest 11 and 12). */
const HOST_METADATA = 'host';

/** One controller's use of a route method: its `@Idempotent()` settings and its host option. */
export interface RouteUse {
  settings: IdempotentOptions | false | undefined;
  host: unknown;
}
/** The uses of every controller that routes to one method (usually one). */
type RouteUses = readonly RouteUse[];

interface Reflecting {
  getMetadata?(key: unknown, target: object): unknown;
  getOwnMetadata?(key: unknown, target: object): unknown;
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
 * Marks, for `owner` (the module's service) only, the route methods of `controllers` whose
 * route is `@Idempotent()` on some controller with the uses of every controller that routes to
 * them (a method a base class shares with several controllers is theirs alike). Called before
 * Nest registers the routes: Nest copies a method's metadata onto the handler it gives the
 * platform, which is how that handler is known here. Answers the same uses by Nest's name of
 * a handler (`Controller.method`), for a handler the platform wraps without that metadata
 * (Fastify, a path with a parameter).
 */
export function markRoutes(
  controllers: readonly ControllerClass[],
  read: SettingsReader,
  owner: object,
): Map<string, RouteUses> {
  const byMethod = new Map<object, RouteUse[]>();
  const byName = new Map<string, RouteUse[]>();
  for (const { metatype, name } of controllers) {
    if (typeof metatype !== 'function') continue;
    const prototype = metatype.prototype as Record<string, unknown> | undefined;
    if (!prototype) continue;
    const host = metadataOf(HOST_METADATA, metatype);
    for (const methodName of routeMethodNames(prototype)) {
      const method = prototype[methodName] as object;
      const use = { settings: read(method, metatype), host };
      const same = byMethod.get(method) ?? [];
      same.push(use);
      byMethod.set(method, same);
      const label = `${typeof name === 'string' ? name : metatype.name}.${methodName}`;
      const named = byName.get(label) ?? [];
      named.push(use);
      byName.set(label, named);
    }
  }
  for (const [method, uses] of byMethod) {
    if (!uses.some((use) => use.settings)) continue;
    let marks = reflect.getOwnMetadata?.(ROUTE_SETTINGS_METADATA, method);
    if (!(marks instanceof WeakMap)) {
      marks = new WeakMap<object, RouteUses>();
      reflect.defineMetadata?.(ROUTE_SETTINGS_METADATA, marks, method);
    }
    (marks as WeakMap<object, RouteUses>).set(owner, uses);
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

/** A refused request, as both platforms have it. */
export interface RefusedRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
}

/** What idem would make of a refused keyed request to a route of these settings. */
export interface RefusalJudge {
  /**
   * Whether the interceptor reads the body of this request for a route of these settings (see
   * `IdempotencyHandler.bodyLimit`): the method needs a key and the request carries one.
   */
  reads(settings: IdempotentOptions, request: RefusedRequest): boolean;
  /**
   * The answer the interceptor gives before it reads the body (an invalid key, an invalid
   * target: `IdempotencyHandler.beforeScope`), when there is one.
   */
  early(settings: IdempotentOptions, request: RefusedRequest): RespondDecision | undefined;
  /** The host name Nest matches a controller's host option against. */
  hostname(request: unknown): string;
}
type RespondDecision = Extract<IdempotencyDecision, { action: 'respond' }>;

/**
 * What idem answers a refused request to a route of these uses: nothing (undefined) unless the
 * route is `@Idempotent()` on every controller that routes to it and the interceptor reads the
 * request's body there; then the answer it gives before reading (a 400), else the problem.
 */
function answerFor(
  uses: RouteUses | undefined,
  request: RefusedRequest,
  judge: RefusalJudge,
): RespondDecision | 'body-too-large' | undefined {
  if (uses === undefined || uses.length === 0) return undefined;
  const settings: IdempotentOptions[] = [];
  for (const { settings: one } of uses) {
    if (one === undefined || one === false || !judge.reads(one, request)) return undefined;
    settings.push(one);
  }
  return judge.early(settings[0] as IdempotentOptions, request) ?? 'body-too-large';
}

/**
 * Whether Nest's host filter (`@Controller({ host })`) lets a request with this host name
 * through to the route of these uses: true, false, or undefined when that is not known here (a
 * host option with a wildcard or an optional group: see {@link hostPattern}).
 */
function hostAdmits(uses: RouteUses, hostname: string): boolean | undefined {
  let admits: boolean | undefined;
  for (const { host } of uses) {
    const one = oneHostAdmits(host, hostname);
    if (one === undefined) return undefined;
    if (admits !== undefined && admits !== one) return undefined;
    admits = one;
  }
  return admits;
}

function oneHostAdmits(host: unknown, hostname: string): boolean | undefined {
  if (host === undefined || host === null) return true;
  let unknown = false;
  for (const one of Array.isArray(host) ? (host as unknown[]) : [host]) {
    // As Nest matches a RegExp (`hostname.match`), and a string (compiled by path-to-regexp).
    const pattern = one instanceof RegExp ? one : hostPattern(one);
    if (pattern === undefined) unknown = true;
    else if (hostname.match(pattern)) return true;
  }
  return unknown ? undefined : false;
}

/** Compiled host options, by their string. */
const hostPatterns = new Map<string, RegExp | null>();

/**
 * The RegExp path-to-regexp 8 (Nest 11 and 12's) makes of a host option of text and `:name`
 * parameters, which is what host options use (`api.example.com`, `:tenant.example.com`);
 * undefined for one with a wildcard, an optional group or anything else, not read here.
 * As path-to-regexp: the whole name, any case, an optional trailing `/`; the first parameter
 * of a segment any characters but `/`, a later one none of the text before it (or that text
 * alone). Exported for its test, which compares it with path-to-regexp.
 */
export function hostPattern(host: unknown): RegExp | undefined {
  if (typeof host !== 'string') return undefined;
  let known = hostPatterns.get(host);
  if (known === undefined) {
    known = compileHost(host) ?? null;
    // Host options are a few strings an app declares: bounded.
    if (hostPatterns.size < 1024) hostPatterns.set(host, known);
  }
  return known ?? undefined;
}

const escapeText = (text: string) => text.replace(/[.+*?^${}()[\]|/\\]/g, '\\$&');

/** Blocks backtracking on the text before a parameter, as path-to-regexp's `negate`. */
function negate(a: string, b: string): string {
  if (b.length > a.length) return negate(b, a);
  const other = a === b ? '' : b;
  if (other.length > 1) return `(?:(?!${escapeText(a)}|${escapeText(other)})[^])`;
  if (a.length > 1) return `(?:(?!${escapeText(a)})[^${escapeText(other)}])`;
  return `[^${escapeText(a + other)}]`;
}

function compileHost(host: string): RegExp | undefined {
  let source = '';
  let text = '';
  let seenParam = false;
  let i = 0;
  while (i < host.length) {
    const char = host[i] as string;
    if (char === '\\') {
      if (i + 1 >= host.length) return undefined;
      text += host[i + 1];
      i += 2;
      continue;
    }
    if (char === ':') {
      const name = /^[$_\p{ID_Start}](?:[$\p{ID_Continue}]|\u200c|\u200d)*/u.exec(
        host.slice(i + 1),
      );
      // A quoted name, a missing one, or a parameter right after another: not read here.
      if (!name || (seenParam && text === '')) return undefined;
      source += escapeText(text);
      if (text.includes('/')) seenParam = false;
      source += seenParam ? `(${negate('/', text)}+|${escapeText(text)})` : `(${negate('/', '')}+)`;
      seenParam = true;
      text = '';
      i += 1 + name[0].length;
      continue;
    }
    if ('{}()[]?+!*"'.includes(char)) return undefined;
    text += char;
    i++;
  }
  source += escapeText(text);
  return new RegExp(`^(?:${source})(?:\\/$)?$`, 'i');
}

/** The uses {@link markRoutes} left for `owner` on the handler Nest registered, or undefined. */
function usesOf(
  handler: unknown,
  owner: object,
  byName: ReadonlyMap<string, RouteUses>,
): RouteUses | undefined {
  const marks = metadataOf(ROUTE_SETTINGS_METADATA, handler);
  if (marks instanceof WeakMap) return (marks as WeakMap<object, RouteUses>).get(owner);
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
interface FastifyRequestLike extends RefusedRequest {
  params?: unknown;
  raw?: IncomingMessage;
}
interface FastifyReplyLike {
  raw: ServerResponse;
  code(status: number): unknown;
  header(name: string, value: string): unknown;
  send(payload?: unknown): unknown;
  hijack(): unknown;
}
type FastifyErrorHandler = (
  this: unknown,
  error: unknown,
  request: FastifyRequestLike,
  reply: FastifyReplyLike,
) => unknown;
interface FastifyLike {
  addHook(name: 'onRoute', hook: (route: FastifyRouteLike) => void): unknown;
}

/**
 * Whether Nest's Fastify adapter passes a request it routed here on to the not-found handler:
 * find-my-way matches an empty path segment for a route parameter, which the adapter refuses
 * (only the wildcard may be empty).
 */
function emptyParameter(params: unknown): boolean {
  if (typeof params !== 'object' || params === null) return false;
  for (const [name, value] of Object.entries(params)) if (value === '' && name !== '*') return true;
  return false;
}

/**
 * Fastify: an `onRoute` hook that gives each `@Idempotent()` route an error handler which
 * answers Fastify's own body limit (`FST_ERR_CTP_BODY_TOO_LARGE`) refusing a keyed request the
 * interceptor would read with the `body-too-large` problem (or the 400 the interceptor answers
 * first: an invalid key). Every other error, and that one for any other request (one the route
 * would not serve: another host than its controller's, an empty parameter), goes on as before:
 * to the route's own handler, else (thrown) to the instance's (Nest's exception layer). Only an
 * error reaches it: no cost to any other request. Added before Nest registers its routes (when
 * the module's service is made).
 */
export function answerFastifyBodyLimit(
  fastify: FastifyLike,
  owner: object,
  byName: ReadonlyMap<string, RouteUses>,
  judge: RefusalJudge,
): void {
  fastify.addHook('onRoute', (route) => {
    const uses = usesOf(route.handler, owner, byName);
    if (!uses?.some((use) => use.settings)) return;
    const own = route.errorHandler;
    const refusesEmpty = refusesEmptyParams.has(route.handler as object);
    route.errorHandler = function idempotencyBodyLimit(error, request, reply) {
      let answer: ReturnType<typeof answerFor>;
      try {
        answer =
          (error as { code?: unknown } | null)?.code === 'FST_ERR_CTP_BODY_TOO_LARGE' &&
          !(refusesEmpty && emptyParameter(request.params)) &&
          hostAdmits(uses, judge.hostname(request)) === true
            ? answerFor(uses, request, judge)
            : undefined;
      } catch {
        // What this reads changed shape (nestrev23b): the error goes on as without idem.
        answer = undefined;
      }
      if (answer === 'body-too-large') {
        reply.code(413);
        for (const [name, value] of Object.entries(PROBLEM_HEADERS)) reply.header(name, value);
        reply.send(PROBLEM_BODY);
        return;
      }
      if (answer !== undefined) {
        const whole = wholeDecisionResponse(answer);
        if (whole) {
          reply.code(whole.status);
          for (const [name, value] of whole.headers) reply.header(name, value);
          reply.send(whole.body);
        } else {
          reply.hijack();
          return sendDecisionResponse(reply.raw, answer);
        }
        return;
      }
      if (own) return own.call(this, error, request, reply);
      if (error instanceof Error) throw error;
      // A thrown value that is no Error would be sent as a payload: handed on as Fastify hands
      // on what a hook threw; else as a rejected promise, which Fastify takes for an error too
      // but publishes once more on its `fastify.request.handler` tracing channel.
      if (sendAsError(reply, error)) return;
      return Promise.reject(error);
    };
  });
}

/**
 * Sends a value that is no Error to the reply's next error handler as Fastify sends what a hook
 * or a route threw: with its private error flag (`kReplyIsError`, found by its description)
 * set first. False when the reply has no such flag, or it is set already.
 */
function sendAsError(reply: FastifyReplyLike, value: unknown): boolean {
  const flags = reply as unknown as Record<symbol, unknown>;
  const flag = Object.getOwnPropertySymbols(reply).find(
    (symbol) => symbol.description === 'fastify.reply.isError',
  );
  if (flag === undefined || flags[flag] !== false) return false;
  flags[flag] = true;
  reply.send(value);
  return true;
}

/**
 * Fastify: Nest's adapter wraps the handler of a route with a parameter (`requireNonEmptyParams`)
 * in a function without its metadata, known then only by its name, which Nest gives it only
 * where it registers a route itself (not a route it resolved first and registers later: with a
 * route conflict policy). Wraps that method of the adapter (before Nest registers the routes) so
 * that the wrapper carries the handler's marks too.
 */
export function keepFastifyMarks(adapter: {
  requireNonEmptyParams?(url: unknown, handler: unknown): unknown;
}): void {
  const wrap = adapter.requireNonEmptyParams;
  if (typeof wrap !== 'function') return;
  adapter.requireNonEmptyParams = function (this: unknown, url, handler) {
    const wrapped = wrap.call(this, url, handler);
    if (wrapped !== handler && typeof wrapped === 'function') {
      refusesEmptyParams.add(wrapped);
      const marks = metadataOf(ROUTE_SETTINGS_METADATA, handler);
      if (marks instanceof WeakMap)
        reflect.defineMetadata?.(ROUTE_SETTINGS_METADATA, marks, wrapped);
    }
    return wrapped;
  };
}

/**
 * The route handlers Nest's Fastify adapter wrapped with its check of empty parameters (Nest 12;
 * Nest 11.0.0 has none and runs a route with an empty parameter): only these refuse a request
 * with one (nestrev23b).
 */
const refusesEmptyParams = new WeakSet<object>();

interface ExpressLayerLike {
  route?: {
    methods?: Record<string, unknown>;
    stack?: ReadonlyArray<{ method?: string; handle?: unknown }>;
  };
  /** A middleware's function: a mounted Router has a `stack` of its own. */
  handle?: unknown;
  /** The part of the path the layer matched, set by `match` (Express's router trims it). */
  path?: unknown;
  match?(path: string): unknown;
}
interface ExpressLike {
  router?: { stack?: readonly ExpressLayerLike[] };
  _router?: { stack?: readonly ExpressLayerLike[] };
  use(handler: (...args: never[]) => void): unknown;
}
type ExpressRequest = IncomingMessage & { url: string; method: string; originalUrl?: string };

/**
 * Where Nest's Express adapter's version filter (header, media-type or custom versioning) is
 * found on the handler it made (copied along by `Object.assign` onto a wrapper Nest makes of
 * it): see {@link watchExpressVersionFilters}.
 */
const VERSION_FILTER = Symbol('@idem/nestjs:version-filter');
/** Set while a version filter is probed: the route it guards is not called, only noted. */
let probing: { reached: boolean } | undefined;

interface ExpressAdapterLike {
  applyVersionFilter?(handler: unknown, version: unknown, options: unknown): unknown;
}

/**
 * Express: Nest's version filter of a route (header, media-type, custom versioning) passes a
 * request of another version on to the next route. Wraps the adapter's `applyVersionFilter`
 * (before Nest registers the routes) so that the filter of each route can be asked, without
 * running the route, whether it lets a request through: the route it guards is called through
 * a function that, while {@link probing}, only notes that it was reached.
 */
export function watchExpressVersionFilters(adapter: ExpressAdapterLike): void {
  const apply = adapter.applyVersionFilter;
  if (typeof apply !== 'function') return;
  adapter.applyVersionFilter = function (this: unknown, handler, version, options) {
    if (typeof handler !== 'function') return apply.call(this, handler, version, options);
    const guarded = function (this: unknown, ...args: unknown[]) {
      if (probing) {
        probing.reached = true;
        return undefined;
      }
      return (handler as (...args: unknown[]) => unknown).apply(this, args);
    };
    const filter = apply.call(this, guarded, version, options);
    if (typeof filter === 'function' && !Object.hasOwn(filter, VERSION_FILTER))
      Object.defineProperty(filter, VERSION_FILTER, { value: filter, enumerable: true });
    return filter;
  };
}

/** Whether a route's version filter lets the request through: true, false, or undefined when unknown. */
function versionAdmits(
  handler: unknown,
  request: ExpressRequest,
  response: unknown,
): boolean | undefined {
  const filter = (handler as { [VERSION_FILTER]?: unknown } | null)?.[VERSION_FILTER];
  if (typeof filter !== 'function') return true;
  const probe = { reached: false };
  let passed = false;
  probing = probe;
  try {
    (filter as (req: unknown, res: unknown, next: () => void) => unknown)(request, response, () => {
      passed = true;
    });
  } catch {
    return undefined;
  } finally {
    probing = undefined;
  }
  return probe.reached ? true : passed ? false : undefined;
}

/**
 * The Nest route that would serve the request, found as Express's router would: the first
 * route layer that matches the path and method and whose handler does not pass the request on
 * (Nest's version filter, its host filter). `null` when no route would (a 404); undefined when
 * that is not known here: a path this does not read as the router does (an absolute-form
 * target, a character the router's URL parser escapes, an escape it cannot decode), a route
 * handler that is not Nest's (the app's own Express route), a filter whose answer is unknown.
 */
function expressRoute(
  app: ExpressLike,
  request: ExpressRequest,
  response: unknown,
  owner: object,
  byName: ReadonlyMap<string, RouteUses>,
  judge: RefusalJudge,
): { uses: RouteUses | undefined } | null | undefined {
  const stack = (app.router ?? app._router)?.stack;
  const url = request.url;
  if (typeof url !== 'string' || !url.startsWith('/')) return undefined;
  const end = url.search(/[?#]/);
  const path = end === -1 ? url : url.slice(0, end);
  // biome-ignore lint/suspicious/noControlCharactersInRegex: what the URL parser escapes
  if (/[\u0000-\u0020\u007f-\uffff]/.test(path)) return undefined;
  const find = { request, response, owner, byName, judge };
  return routeIn(stack, path, find, 0);
}

interface RouteSearch {
  request: ExpressRequest;
  response: unknown;
  owner: object;
  byName: ReadonlyMap<string, RouteUses>;
  judge: RefusalJudge;
}

/**
 * {@link expressRoute} in one router's stack, for the path left to it. A Router the app mounts
 * (`app.use(path, router)`) is searched too, for the rest of the path, as Express hands it on;
 * a sub-app mounted so (`app.use(path, app2)`), whose routes are not reachable here, makes the
 * answer unknown where it matches (nestrev23b: its own route may serve the request).
 */
function routeIn(
  stack: unknown,
  path: string,
  find: RouteSearch,
  depth: number,
): { uses: RouteUses | undefined } | null | undefined {
  if (!Array.isArray(stack) || depth > 8) return undefined;
  const { request, response, owner, byName, judge } = find;
  const requested = request.method.toLowerCase();
  for (const layer of stack as readonly ExpressLayerLike[]) {
    if (!layer || typeof layer.match !== 'function') continue;
    const handle = layer.handle as
      | (((...args: never[]) => unknown) & { stack?: unknown })
      | undefined;
    const mounted = !layer.route && typeof handle === 'function';
    const router = mounted && Array.isArray(handle.stack);
    if (!layer.route && !router && !(mounted && handle.name === 'mounted_app')) continue;
    let matched: unknown;
    try {
      matched = layer.match(path);
    } catch {
      return undefined;
    }
    if (!matched) continue;
    if (!layer.route) {
      // The matched part: what `match` answers (router 2.1 on), else what it set (router 2.0).
      const prefix =
        typeof matched === 'object' ? (matched as { path?: unknown }).path : layer.path;
      if (!router || typeof prefix !== 'string') return undefined;
      const rest = path.slice(prefix.length);
      const found = routeIn(
        handle?.stack,
        rest.startsWith('/') ? rest : `/${rest}`,
        find,
        depth + 1,
      );
      if (found === null) continue;
      return found;
    }
    // As Express's route: a HEAD request goes to its GET handlers when it has no HEAD one.
    const method = requested === 'head' && !layer.route.methods?.head ? 'get' : requested;
    for (const one of layer.route.stack ?? []) {
      if (one.method !== undefined && one.method !== method) continue;
      // Nest's route handlers carry their method's route metadata; the app's own do not.
      if (metadataOf(METHOD_METADATA, one.handle) === undefined) return undefined;
      const version = versionAdmits(one.handle, request, response);
      if (version === undefined) return undefined;
      if (!version) continue;
      const uses = usesOf(one.handle, owner, byName);
      // A route that is not idempotent (here) serves it, or another after it: not ours either way.
      if (uses === undefined) return { uses };
      const host = hostAdmits(uses, judge.hostname(request));
      if (host === undefined) return undefined;
      if (host) return { uses };
    }
  }
  return null;
}

/**
 * Express: an error middleware, added after Nest's routes and before its exception layer
 * (in the module's `onModuleInit`), that answers body-parser's own limit
 * (`entity.too.large`) refusing a keyed request the interceptor would read with the
 * `body-too-large` problem (or the 400 the interceptor answers first: an invalid key): when
 * the route that would serve it (see {@link expressRoute}) is `@Idempotent()` and reads it.
 * Every other error goes on (`next(error)`) to the app's handling as before. Express calls it
 * for errors only.
 */
export function answerExpressBodyLimit(
  app: ExpressLike,
  owner: object,
  byName: ReadonlyMap<string, RouteUses>,
  judge: RefusalJudge,
): void {
  app.use(function idempotencyBodyLimit(
    error: unknown,
    request: ExpressRequest,
    response: ServerResponse,
    next: (error?: unknown) => void,
  ) {
    const refused = error as { type?: unknown; status?: unknown } | null;
    if (refused?.type === 'entity.too.large' && refused.status === 413 && !response.headersSent) {
      let answer: ReturnType<typeof answerFor>;
      try {
        const route = expressRoute(app, request, response, owner, byName, judge);
        answer = route ? answerFor(route.uses, request, judge) : undefined;
      } catch {
        // What this reads changed shape (nestrev23b): the error goes on as without idem.
        answer = undefined;
      }
      if (answer === 'body-too-large') {
        response.statusCode = 413;
        for (const [name, value] of Object.entries(PROBLEM_HEADERS))
          response.setHeader(name, value);
        response.setHeader('content-length', PROBLEM_BODY.length);
        response.end(PROBLEM_BODY);
        return;
      }
      if (answer !== undefined) {
        sendDecisionResponse(response, answer).catch(() => response.destroy());
        return;
      }
    }
    next(error);
  } as never);
}

/** A {@link RefusalJudge} of the HTTP handlers of a route's settings. */
export function refusalJudge(
  handlerFor: (settings: IdempotentOptions) => {
    bodyLimit(request: { method: string; header(name: string): string | undefined }): unknown;
    beforeScope(request: {
      method: string;
      url: string;
      header(name: string): string | undefined;
    }): IdempotencyDecision | undefined;
  },
  hostname: (request: unknown) => unknown,
): RefusalJudge {
  const view = (request: RefusedRequest) => ({
    method: request.method,
    url: requestUrl((request as { originalUrl?: string }).originalUrl ?? request.url),
    header: (name: string) => headerValue(request.headers, name),
  });
  return {
    reads: (settings, request) => handlerFor(settings).bodyLimit(view(request)) !== undefined,
    early: (settings, request) => {
      const decision = handlerFor(settings).beforeScope(view(request));
      return decision?.action === 'respond' ? decision : undefined;
    },
    hostname: (request) => {
      const name = hostname(request);
      return typeof name === 'string' ? name : '';
    },
  };
}
