import { createMemoryStore } from '@idem/store-memory';
import { describe, expect, it } from 'vitest';
import { createIdempotencyHandler, REPLAYED_HEADER } from '../src/index.js';
import { lightweightBody } from '../src/lightweight-response.js';

// The shape of @hono/node-server's lightweight Response (1.19 and 2.x): status, body and
// headers in an array under a private symbol described `cache`, read by its getters; once made
// into a real Response the array is gone and `responseCache` holds that Response. Only this
// exact shape is taken; anything near it goes the ordinary way (undefined).
const CACHE = Symbol('cache');
const RESPONSE_CACHE = Symbol('responseCache');

class Lightweight {
  declare [CACHE]?: [number, unknown, unknown];
  declare [RESPONSE_CACHE]?: Response;
  constructor(status: number, body: unknown, headers?: HeadersInit) {
    this[CACHE] = [status, body, headers];
  }
  get status(): number {
    return this[CACHE]?.[0] ?? 0;
  }
  get headers(): Headers {
    const cache = this[CACHE] as [number, unknown, unknown];
    if (!(cache[2] instanceof Headers)) cache[2] = new Headers(cache[2] as HeadersInit);
    return cache[2] as Headers;
  }
}

const asResponse = (value: object) => value as unknown as Response;

describe('lightweightBody', () => {
  it('takes the body of a lightweight response: a string, bytes or none', () => {
    const bytes = new Uint8Array([1, 2]);
    expect(lightweightBody(asResponse(new Lightweight(201, 'text')))).toEqual({ body: 'text' });
    expect(lightweightBody(asResponse(new Lightweight(200, bytes)))?.body).toBe(bytes);
    expect(lightweightBody(asResponse(new Lightweight(204, null)))).toEqual({ body: null });
  });

  it('leaves a real Response, a stream or Blob body, and a materialized one alone', () => {
    expect(lightweightBody(new Response('real'))).toBeUndefined();
    expect(lightweightBody(asResponse(new Lightweight(200, new ReadableStream())))).toBeUndefined();
    expect(lightweightBody(asResponse(new Lightweight(200, new Blob(['b']))))).toBeUndefined();
    const materialized = new Lightweight(200, 'text');
    materialized[RESPONSE_CACHE] = new Response('text');
    expect(lightweightBody(asResponse(materialized))).toBeUndefined();
  });

  it('leaves anything whose getters do not read the array alone', () => {
    const otherStatus = new Lightweight(200, 'text');
    Object.defineProperty(otherStatus, 'status', { value: 201 });
    expect(lightweightBody(asResponse(otherStatus))).toBeUndefined();
    const otherHeaders = new Lightweight(200, 'text');
    Object.defineProperty(otherHeaders, 'headers', { value: new Headers() });
    expect(lightweightBody(asResponse(otherHeaders))).toBeUndefined();
    const longer = new Lightweight(200, 'text');
    (longer[CACHE] as unknown[]).push('more');
    expect(lightweightBody(asResponse(longer))).toBeUndefined();
    const notArray = new Lightweight(200, 'text');
    (notArray as unknown as Record<symbol, unknown>)[CACHE] = { 0: 200, 1: 'text', length: 3 };
    expect(lightweightBody(asResponse(notArray))).toBeUndefined();
  });
});

describe('recordResponse with a lightweight response', () => {
  const handler = createIdempotencyHandler({ store: createMemoryStore(), scope: 'global' });
  const begin = (key: string) =>
    handler.begin({
      native: undefined as unknown as Request,
      method: 'POST',
      url: 'http://api.test/orders',
      header: (name) => (name === 'idempotency-key' ? key : undefined),
      readBody: async () => ({ kind: 'none' }),
    });

  it('records its body, answers the same object and never asks for the request signal', async () => {
    const decision = await begin('light-1');
    if (decision.action !== 'execute') throw new Error(decision.action);
    const light = asResponse(
      new Lightweight(201, 'caf\u00e9', { 'content-type': 'text/plain; charset=utf-8' }),
    );
    let asked = 0;
    const sent = await decision.recorder.recordResponse(light, () => {
      asked++;
      return undefined;
    });
    expect(sent).toBe(light);
    expect(asked).toBe(0);
    const replay = await begin('light-1');
    if (replay.action !== 'respond') throw new Error(replay.action);
    expect(replay.response.status).toBe(201);
    expect(replay.response.headers.get(REPLAYED_HEADER)).toBe('true');
    expect(replay.response.headers.get('content-type')).toBe('text/plain; charset=utf-8');
    expect(new Uint8Array(await replay.response.arrayBuffer())).toEqual(
      new TextEncoder().encode('caf\u00e9'),
    );
  });

  it('asks for the signal once when the body has to be read', async () => {
    const decision = await begin('stream-1');
    if (decision.action !== 'execute') throw new Error(decision.action);
    let asked = 0;
    const controller = new AbortController();
    const sent = await decision.recorder.recordResponse(new Response('streamed'), () => {
      asked++;
      return controller.signal;
    });
    expect(await sent.text()).toBe('streamed');
    expect(asked).toBe(1);
  });
});
