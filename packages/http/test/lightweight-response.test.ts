import { createMemoryStore } from '@idem/store-memory';
import { describe, expect, it } from 'vitest';
import { createIdempotencyHandler, REPLAYED_HEADER } from '../src/index.js';
import { lightweightBody } from '../src/lightweight-response.js';

// The shape of @hono/node-server's lightweight Response (1.19 and 2.x): status, body and
// headers in an array under a private symbol described `cache`, read by its getters; once made
// into a real Response the array is gone and `responseCache` holds that Response. node-server
// makes its class the global `Response` when it serves; only that class's symbol counts (learned
// from the global), and only this exact shape is taken; anything near it goes the ordinary way.
const CACHE = Symbol('cache');
const RESPONSE_CACHE = Symbol('responseCache');

class Lightweight {
  declare [CACHE]?: [number, unknown, unknown];
  declare [RESPONSE_CACHE]?: Response;
  constructor(body: unknown, init?: { status?: number; headers?: HeadersInit }) {
    this[CACHE] = [init?.status ?? 200, body, init?.headers];
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

const light = (status: number, body: unknown, headers?: HeadersInit) =>
  new Lightweight(body, { status, ...(headers ? { headers } : {}) });

const asResponse = (value: object) => value as unknown as Response;

/** Runs `fn` while the global `Response` is the lightweight class, as under node-server. */
async function underLightweightGlobal<T>(fn: () => T | Promise<T>): Promise<T> {
  const original = globalThis.Response;
  globalThis.Response = Lightweight as unknown as typeof Response;
  try {
    return await fn();
  } finally {
    globalThis.Response = original;
  }
}

describe('lightweightBody', () => {
  it('takes the body of a lightweight response: a string, bytes or none', async () => {
    const bytes = new Uint8Array([1, 2]);
    await underLightweightGlobal(() => {
      expect(lightweightBody(asResponse(light(201, 'text')))).toEqual({ body: 'text' });
      expect(lightweightBody(asResponse(light(200, bytes)))?.body).toBe(bytes);
      expect(lightweightBody(asResponse(light(204, null)))).toEqual({ body: null });
    });
  });

  it('takes nothing while the global Response is not the lightweight class, nor a look-alike of it', async () => {
    // node-server not serving (or told not to replace the global): the ordinary way.
    expect(lightweightBody(asResponse(light(201, 'text')))).toBeUndefined();
    // A class of the same shape with a symbol of the same name that is not the global's.
    const OTHER = Symbol('cache');
    const lookAlike = light(200, 'sent');
    (lookAlike as unknown as Record<symbol, unknown>)[OTHER] = [200, 'other', lookAlike.headers];
    delete lookAlike[CACHE];
    await underLightweightGlobal(() => {
      expect(lightweightBody(asResponse(lookAlike))).toBeUndefined();
      expect(lightweightBody(asResponse(light(201, 'text')))).toEqual({ body: 'text' });
    });
  });

  it('leaves a real Response, a stream or Blob body, and a materialized one alone', async () => {
    const real = new Response('real');
    await underLightweightGlobal(() => {
      expect(lightweightBody(real)).toBeUndefined();
      expect(lightweightBody(asResponse(light(200, new ReadableStream())))).toBeUndefined();
      expect(lightweightBody(asResponse(light(200, new Blob(['b']))))).toBeUndefined();
      const materialized = light(200, 'text');
      materialized[RESPONSE_CACHE] = real;
      expect(lightweightBody(asResponse(materialized))).toBeUndefined();
    });
  });

  it('leaves anything whose getters do not read the array alone', async () => {
    await underLightweightGlobal(() => {
      const otherStatus = light(200, 'text');
      Object.defineProperty(otherStatus, 'status', { value: 201 });
      expect(lightweightBody(asResponse(otherStatus))).toBeUndefined();
      const otherHeaders = light(200, 'text');
      Object.defineProperty(otherHeaders, 'headers', { value: new Headers() });
      expect(lightweightBody(asResponse(otherHeaders))).toBeUndefined();
      const longer = light(200, 'text');
      (longer[CACHE] as unknown[]).push('more');
      expect(lightweightBody(asResponse(longer))).toBeUndefined();
      const notArray = light(200, 'text');
      (notArray as unknown as Record<symbol, unknown>)[CACHE] = { 0: 200, 1: 'text', length: 3 };
      expect(lightweightBody(asResponse(notArray))).toBeUndefined();
    });
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
    const handed = asResponse(
      light(201, 'caf\u00e9', { 'content-type': 'text/plain; charset=utf-8' }),
    );
    let asked = 0;
    const sent = await underLightweightGlobal(() =>
      decision.recorder.recordResponse(handed, () => {
        asked++;
        return undefined;
      }),
    );
    expect(sent).toBe(handed);
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
