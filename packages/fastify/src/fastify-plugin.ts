import {
  BodyTooLargeError,
  bodyFromBytes,
  bodyFromParsed,
  createIdempotencyHandler,
  type HttpIdempotencyOptions,
  type IdempotencyContext,
  type IdempotencyHandler,
  isJsonContentType,
  type RequestBody,
} from '@idem/http';
import {
  headerValue,
  recordServerResponse,
  requestUrl,
  wholeDecisionResponse,
} from '@idem/http/node';
import type { FastifyPluginCallback, FastifyRequest } from 'fastify';
import { BodyTap } from './body-tap.js';

/** Options of the {@link idempotency} plugin: those of `@idem/http`, with hooks that get the Fastify request. */
export type FastifyIdempotencyOptions = HttpIdempotencyOptions<FastifyRequest>;

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

/** The body copy of a request (see `onRequest`), with the handler that asked for it. */
const kTap = Symbol('@idem/fastify body tap');
interface Tapped {
  [kTap]: { tap: BodyTap; handler: IdempotencyHandler<FastifyRequest> } | null;
}

/**
 * The body for the fingerprint: the bytes as sent when the tap saw all of them and the
 * parsed value could have lost something (a JSON type, which `JSON.parse` can make alike; a
 * body the parser left as a string or bytes, which decoding can). Otherwise, as before the
 * tap, Fastify's parsed body: a body a `preParsing` hook replaced, one a parser reads later
 * (multipart), or one parsed to another value (a form), fingerprinted as that value.
 */
function requestBody(
  request: FastifyRequest,
  taken: Uint8Array | 'over' | undefined,
  cap: number,
  limit: number,
): RequestBody {
  const contentType = headerValue(request.headers, 'content-type');
  const parsed = request.body;
  if (taken === 'over' && cap >= limit) throw new BodyTooLargeError(limit);
  if (
    taken instanceof Uint8Array &&
    (isJsonContentType(contentType) || typeof parsed === 'string' || parsed instanceof Uint8Array)
  ) {
    if (taken.length > limit) throw new BodyTooLargeError(limit);
    return bodyFromBytes(taken, contentType);
  }
  return bodyFromParsed(parsed, contentType, limit);
}

const plugin: FastifyPluginCallback<FastifyIdempotencyOptions> = (fastify, options, done) => {
  const base = createIdempotencyHandler<FastifyRequest>(options);
  const perRoute = new WeakMap<object, IdempotencyHandler<FastifyRequest>>();

  function handlerFor(request: FastifyRequest): IdempotencyHandler<FastifyRequest> | undefined {
    // No route matched: let Fastify answer 404 rather than ask for a key.
    if (request.is404) return undefined;
    const route = request.routeOptions.config?.idempotency;
    if (route === undefined) return base;
    if (route === false) return undefined;
    let handler = perRoute.get(route);
    if (!handler) {
      handler = createIdempotencyHandler<FastifyRequest>({
        ...options,
        ...route,
        store: options.store,
      });
      perRoute.set(route, handler);
    }
    return handler;
  }

  fastify.decorateRequest('idempotency', null);
  fastify.decorateRequest(kTap, null);
  // onRequest, before any preParsing hook (a decompression one registered before the plugin)
  // can read the Node request: start copying the body for the fingerprint, only for a
  // request whose body begin() will read (idempotency on for the route, a method that needs
  // a key, a key sent), never past maxBodyBytes nor the route's bodyLimit.
  fastify.addHook('onRequest', (request, _reply, done) => {
    const headers = request.headers;
    if (hasBody(headers)) {
      const handler = handlerFor(request);
      const limit = handler?.bodyLimit(request.method, (name) => headerValue(headers, name));
      if (limit !== undefined) {
        const cap = Math.min(limit, request.routeOptions.bodyLimit);
        // A declared length past the cap is answered 413 (by Fastify or begin) unread.
        const tap =
          Number(headers['content-length']) > cap ? undefined : BodyTap.start(request.raw, cap);
        if (tap) (request as unknown as Tapped)[kTap] = { tap, handler: handler! };
      }
    }
    done();
  });
  // preHandler: after Fastify parsed (and size-limited) the body, before the route handler.
  fastify.addHook('preHandler', async (request, reply) => {
    const tapped = (request as unknown as Tapped)[kTap];
    const handler = tapped ? tapped.handler : handlerFor(request);
    if (!handler) return;
    // Stop copying now, read whole or not: a body read later (multipart) is not kept.
    const taken = tapped?.tap.take();
    const cap = tapped ? tapped.tap.cap : 0;
    const decision = await handler.begin({
      native: request,
      method: request.method,
      url: requestUrl(request.url),
      ...(request.routeOptions.url === undefined ? {} : { route: request.routeOptions.url }),
      header: (name) => headerValue(request.headers, name),
      // Fastify parsed (and size-limited) the body already.
      readBody: async (limit) => requestBody(request, taken, cap, limit),
    });
    if (decision.action === 'pass') return;
    if (decision.action === 'respond') {
      // On the reply too, not only on the Response: an onSend hook that replaces the payload
      // must not turn a 409, a 422 or a replay into a 200 without its headers.
      const whole = wholeDecisionResponse(decision);
      // A body without a Content-Type would get Fastify's own: sent as a Response instead.
      if (whole && (!whole.body || whole.headers.some(([name]) => name === 'content-type'))) {
        reply.code(whole.status);
        for (const [name, value] of whole.headers) reply.header(name, value);
        return reply.send(whole.body);
      }
      reply.code(decision.response.status);
      for (const [name, value] of decision.response.headers) reply.header(name, value);
      return reply.send(decision.response);
    }
    request.idempotency = decision.recorder.context;
    // Record at the Node response: every payload Fastify sends (buffers, Node and Web
    // streams, Response objects) ends up there, written chunk by chunk.
    recordServerResponse(reply.raw, decision.recorder);
  });
  done();
};

/** Whether the request declares a body (as Fastify decides whether to parse one). */
function hasBody(headers: FastifyRequest['headers']): boolean {
  const length = headers['content-length'];
  return headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
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
