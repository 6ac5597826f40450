import {
  bodyFromParsed,
  createIdempotencyHandler,
  type HttpIdempotencyOptions,
  type IdempotencyContext,
  type IdempotencyHandler,
} from '@idem/http';
import {
  headerValue,
  recordServerResponse,
  requestUrl,
  wholeDecisionResponse,
} from '@idem/http/node';
import type { FastifyPluginCallback, FastifyRequest } from 'fastify';

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
  // preHandler: after Fastify parsed (and size-limited) the body, before the route handler.
  fastify.addHook('preHandler', async (request, reply) => {
    const handler = handlerFor(request);
    if (!handler) return;
    const decision = await handler.begin({
      native: request,
      method: request.method,
      url: requestUrl(request.url),
      ...(request.routeOptions.url === undefined ? {} : { route: request.routeOptions.url }),
      header: (name) => headerValue(request.headers, name),
      // Fastify parsed (and size-limited) the body already.
      readBody: async (limit) =>
        bodyFromParsed(request.body, headerValue(request.headers, 'content-type'), limit),
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
