// Broken variants of a Web integration of @idem/http for the conformance-suite review
// (confrev): a correct integration whose responses one adapter-style bug rewrites.
import { createIdempotencyHandler, type ScopeHint } from '@idem/http';
import {
  type FrameworkDriver,
  fetchDriver,
  REPLAYED,
  respondWithRoute,
  TENANT_HEADER,
} from '../src/index.js';
import { scenariosFailing } from './failing-scenarios.js';

/** Rewrites the integration's answer to `request` (the bug); identity when correct. */
export type Mutation = (response: Response, request: Request) => Promise<Response> | Response;

export function mutatedDriver(mutate: Mutation): FrameworkDriver {
  return fetchDriver(({ options, routes }) => {
    const idem = createIdempotencyHandler({
      ...options,
      scope: (request: Request) =>
        ({ principal: request.headers.get(TENANT_HEADER) ?? undefined }) as ScopeHint,
    });
    return async (request) =>
      mutate(await idem.handle(request, (inner) => respondWithRoute(routes, inner)), request);
  });
}

const isReplay = (response: Response) => response.headers.get(REPLAYED) === 'true';

/** A copy of `response` with other headers (and the same body stream). */
function withHeaders(response: Response, edit: (headers: Headers) => void): Response {
  const headers = new Headers(response.headers);
  edit(headers);
  return new Response(response.body, { status: response.status, headers });
}

/**
 * Reads the whole body, then hands it on as one chunk: a body that broke midway still
 * breaks (after the bytes read), as a buffering middleware passes an error on.
 */
async function buffered(response: Response): Promise<ReadableStream<Uint8Array>> {
  const parts: Uint8Array[] = [];
  let failure: unknown;
  let broken = false;
  const reader = response.body?.getReader();
  try {
    for (let read = await reader?.read(); read && !read.done; read = await reader?.read())
      parts.push(read.value);
  } catch (error) {
    failure = error;
    broken = true;
  }
  return new ReadableStream<Uint8Array>({
    start(controller) {
      if (parts.length > 0) controller.enqueue(Buffer.concat(parts));
      if (broken) controller.error(failure);
      else controller.close();
    },
  });
}

export const httpVariants: Record<string, Mutation> = {
  'replay without the Idempotent-Replayed marker': (r) =>
    isReplay(r) ? withHeaders(r, (h) => h.delete(REPLAYED)) : r,
  '409 without Retry-After': (r) =>
    r.status === 409 ? withHeaders(r, (h) => h.delete('retry-after')) : r,
  'replay answered 200 whatever the recorded status': (r) =>
    isReplay(r) ? new Response(r.body, { status: 200, headers: r.headers }) : r,
  'replay with one body byte flipped': async (r) => {
    if (!isReplay(r)) return r;
    const body = new Uint8Array(await r.arrayBuffer());
    if (body.length > 0) body[body.length >> 1]! ^= 1;
    return new Response(body, { status: r.status, headers: r.headers });
  },
  'problem answers sent as application/json': (r) =>
    r.headers.get('content-type')?.startsWith('application/problem+json')
      ? withHeaders(r, (h) => h.set('content-type', 'application/json'))
      : r,
  // An adapter that writes the replayed bytes with the framework's "send a Buffer" call
  // (Express `res.send(buffer)`), which sets its own content type.
  'replay of a JSON outcome answered as application/octet-stream': (r) =>
    isReplay(r) && r.headers.get('content-type')?.startsWith('application/json')
      ? withHeaders(r, (h) => h.set('content-type', 'application/octet-stream'))
      : r,
  // An adapter that buffers the first response (a compression or body-parser middleware in
  // front of the integration): the first caller gets an SSE stream only when it ended.
  'first SSE response buffered, not passed through live': async (r) => {
    if (isReplay(r) || !r.headers.get('content-type')?.startsWith('text/event-stream')) return r;
    return new Response(await buffered(r), { status: r.status, headers: r.headers });
  },
  'Idempotent-Replayed marker on 409 and 422 problem answers': (r) =>
    r.status === 409 || r.status === 422 ? withHeaders(r, (h) => h.set(REPLAYED, 'true')) : r,
};

/** Names of the scenarios that fail with `mutate`; stops after `stopAfter` failures. */
export function failingScenarios(mutate: Mutation, stopAfter = 1): Promise<string[]> {
  return scenariosFailing(mutatedDriver(mutate), stopAfter);
}
