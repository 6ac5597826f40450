import {
  createIdempotencyHandler,
  type HttpIdempotencyOptions,
  type IdempotencyContext,
  type IdempotencyDecision,
  type IdempotencyHandler,
} from '@idem/http';
import { recordServerResponse, wholeDecisionResponse } from '@idem/http/node';
import type {
  FastifyPluginCallback,
  FastifyReply,
  FastifyRequest,
  HookHandlerDoneFunction,
} from 'fastify';
import { FastifyIncoming } from './fastify-incoming.js';

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

/**
 * The request as the plugin describes it to `@idem/http` once made (see `onRequest`); false
 * when idempotency is off for it, null until looked at.
 */
const kIncoming = Symbol('@idem/fastify incoming');
interface Held {
  [kIncoming]: FastifyIncoming | false | null;
}

const plugin: FastifyPluginCallback<FastifyIdempotencyOptions> = (fastify, options, done) => {
  const base = createIdempotencyHandler<FastifyRequest>(options);
  const perRoute = new WeakMap<object, IdempotencyHandler<FastifyRequest>>();

  function handlerOf(route: RouteIdempotency | undefined) {
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

  /**
   * The request for `@idem/http`, false when idempotency is off for it. `copy` (at
   * `onRequest` only, before anyone reads the body): start copying its body.
   */
  function incomingOf(request: FastifyRequest, copy: boolean): FastifyIncoming | false {
    // No route matched: let Fastify answer 404 rather than ask for a key.
    if (request.is404) return false;
    const route = request.routeOptions;
    const handler = handlerOf(route.config?.idempotency);
    if (!handler) return false;
    const incoming = new FastifyIncoming(request, handler, route.url as string);
    if (copy) incoming.copyBody();
    return incoming;
  }

  fastify.decorateRequest('idempotency', null);
  fastify.decorateRequest(kIncoming, null);
  // onRequest, before any preParsing hook (a decompression one registered before the plugin)
  // can read the Node request: a request with a body starts copying it for the fingerprint,
  // when begin() will read it (idempotency on for the route, a method that needs a key, a
  // key sent), never past maxBodyBytes.
  fastify.addHook('onRequest', (request, _reply, done) => {
    if (hasBody(request.headers))
      (request as unknown as Held)[kIncoming] = incomingOf(request, true);
    done();
  });
  // preHandler: after Fastify parsed (and size-limited) the body, before the route handler.
  // A callback hook: no promise of its own besides begin's.
  fastify.addHook('preHandler', (request, reply, done) => {
    let incoming = (request as unknown as Held)[kIncoming];
    if (incoming === null) incoming = incomingOf(request, false);
    if (incoming === false) return done();
    const { handler } = incoming;
    handler.begin(incoming).then(
      (decision) => {
        // The copy is used (or was not needed: an invalid key): not held while the route runs.
        (incoming as FastifyIncoming).release();
        try {
          answer(request, reply, decision, done);
        } catch (error) {
          done(error as Error);
        }
      },
      (error: Error) => {
        (incoming as FastifyIncoming).release();
        done(error);
      },
    );
  });
  // A request answered before preHandler (Fastify's 400 for a body that does not parse, 413,
  // 415, a hook's early reply) drops its copy as it ends, not when the request is collected.
  fastify.addHook('onResponse', (request, _reply, done) => {
    const incoming = (request as unknown as Held)[kIncoming];
    if (incoming) incoming.release();
    done();
  });
  done();
};

/** Carries out `begin`'s decision (see the README's "Status codes"). */
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
      reply.code(whole.status);
      for (const [name, value] of whole.headers) reply.header(name, value);
      reply.send(whole.body);
      return;
    }
    reply.code(decision.response.status);
    for (const [name, value] of decision.response.headers) reply.header(name, value);
    reply.send(decision.response);
    return;
  }
  request.idempotency = decision.recorder.context;
  // Record at the Node response: every payload Fastify sends (buffers, Node and Web
  // streams, Response objects) ends up there, written chunk by chunk.
  recordServerResponse(reply.raw, decision.recorder);
  done();
}

function hasContentType(headers: readonly (readonly [string, string])[]): boolean {
  for (const [name] of headers) if (name === 'content-type') return true;
  return false;
}

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
