import type { IdempotencyStore } from '@idem/core';
import { spyStore } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { describe, expect, it } from 'vitest';
import {
  createIdempotencyHandler,
  finalOnceStarted,
  PROBLEM_TYPES,
  REPLAYED_HEADER,
  withIdempotency,
} from '../src/index.js';

import { chunkedResponse, post, readChunks } from './web-requests.js';

const encoder = new TextEncoder();

describe('withIdempotency on Web Request/Response: fingerprints, headers, limits, failures', () => {
  it('answers a stored outcome that does not decode with a 500 problem, not a crash', async () => {
    const memory = createMemoryStore();
    const corrupting: IdempotencyStore = {
      ...memory,
      capabilities: memory.capabilities,
      get: memory.get,
      complete: memory.complete,
      release: memory.release,
      extend: memory.extend,
      acquire: async (input) => {
        const result = await memory.acquire(input);
        if (result.kind === 'found' && result.record.outcome) {
          return { ...result, record: { ...result.record, outcome: new Uint8Array([1, 2, 3]) } };
        }
        return result;
      },
    };
    const fetchLike = withIdempotency(async () => new Response('ok'), {
      scope: 'global',
      store: corrupting,
      onWarning: () => {},
    });
    const first = await fetchLike(post('k-bad'));
    expect(first.status).toBe(200);
    expect(await first.text()).toBe('ok');
    const replay = await fetchLike(post('k-bad'));
    expect(replay.status).toBe(500);
    expect(replay.headers.get('content-type')).toMatch(/application\/problem\+json/);
    expect((await replay.json()).type).toBe(PROBLEM_TYPES.outcomeUnreadable);
  });

  it('tells apart JSON bodies whose numbers JSON.parse cannot hold (422, not a replay)', async () => {
    const fetchLike = withIdempotency(async () => new Response('ok'), {
      scope: 'global',
      store: createMemoryStore(),
      onWarning: () => {},
    });
    const raw = (key: string, body: string) =>
      new Request('http://api.test/pay', {
        method: 'POST',
        headers: { 'idempotency-key': key, 'content-type': 'application/json' },
        body,
      });
    for (const [a, b] of [
      ['{"amount":1e400}', '{"amount":-1e400}'],
      ['{"id":12345678901234567890}', '{"id":12345678901234567891}'],
    ] as const) {
      const key = `k-num-${a.length}`;
      expect(await (await fetchLike(raw(key, a))).text()).toBe('ok');
      expect((await fetchLike(raw(key, b))).status).toBe(422);
      expect((await fetchLike(raw(key, a))).headers.get(REPLAYED_HEADER)).toBe('true');
    }
    // Ordinary JSON is still canonical: key order and spacing do not matter.
    expect(await (await fetchLike(raw('k-canon', '{"a":1,"b":[1.5,2]}'))).text()).toBe('ok');
    const again = await fetchLike(raw('k-canon', '{ "b": [1.50, 2], "a": 1.0 }'));
    expect(again.headers.get(REPLAYED_HEADER)).toBe('true');
  });

  it('rethrows a handler error by default and records a 500 problem once started', async () => {
    const boom = async (): Promise<Response> => {
      throw new Error('boom');
    };
    const byDefault = withIdempotency(boom, {
      scope: 'global',
      store: createMemoryStore(),
      onWarning: () => {},
    });
    await expect(byDefault(post('k5'))).rejects.toThrow('boom');
    await expect(byDefault(post('k5'))).rejects.toThrow('boom');
    const stripeLike = withIdempotency(boom, {
      scope: 'global',
      store: createMemoryStore(),
      isFinal: finalOnceStarted,
      onWarning: () => {},
    });
    const first = await stripeLike(post('k6'));
    expect(first.status).toBe(500);
    expect(await first.json()).toMatchObject({ type: PROBLEM_TYPES.handlerFailed });
    expect((await stripeLike(post('k6'))).headers.get(REPLAYED_HEADER)).toBe('true');
  });

  it('fingerprints JSON canonically and the query string', async () => {
    const fetchLike = withIdempotency(async () => new Response('ok'), {
      scope: 'global',
      store: createMemoryStore(),
      onWarning: () => {},
    });
    await (await fetchLike(post('k7', { a: 1, b: [1, 2] }))).text();
    const reordered = new Request('http://api.test/items?x=1', {
      method: 'POST',
      headers: { 'idempotency-key': 'k7', 'content-type': 'application/json' },
      body: '{"b":[1,2.0],"a":1}',
    });
    expect((await fetchLike(reordered)).headers.get(REPLAYED_HEADER)).toBe('true');
    const otherQuery = new Request('http://api.test/items?x=2', reordered.clone());
    expect((await fetchLike(otherQuery)).status).toBe(422);
  });

  it('refuses to record Set-Cookie or hop-by-hop headers', () => {
    for (const name of ['Set-Cookie', 'transfer-encoding', 'connection']) {
      expect(() =>
        createIdempotencyHandler({
          scope: 'global',
          store: createMemoryStore(),
          recordedHeaders: [name],
        }),
      ).toThrow(name.toLowerCase());
    }
  });

  it('refuses a chunked body over the limit while reading it', async () => {
    const spied = spyStore(createMemoryStore());
    const fetchLike = withIdempotency(async () => new Response('ok'), {
      scope: 'global',
      store: spied.store,
      maxBodyBytes: 10,
      onWarning: () => {},
    });
    const stream = new ReadableStream({
      start(controller) {
        controller.enqueue(encoder.encode('0123456789'));
        controller.enqueue(encoder.encode('abc'));
        controller.close();
      },
    });
    const request = new Request('http://api.test/upload', {
      method: 'POST',
      headers: { 'idempotency-key': 'big' },
      body: stream,
      duplex: 'half',
    } as RequestInit);
    const response = await fetchLike(request);
    expect(response.status).toBe(413);
    expect(spied.calls.acquire).toBe(0);
  });

  it('uses the configured fingerprint parts and recorded headers', async () => {
    const fetchLike = withIdempotency(
      async () => new Response('ok', { headers: { 'x-cost': '3', 'x-trace': 't1' } }),
      {
        scope: 'global',
        store: createMemoryStore(),
        fingerprint: { headers: ['x-api-version'], exclude: ['sentAt'] },
        recordedHeaders: ['X-Cost'],
        onWarning: () => {},
      },
    );
    const call = (sentAt: number, version: string) =>
      fetchLike(post('f1', { amount: 1, sentAt }, { 'x-api-version': version }));
    await (await call(1, 'v1')).text();
    const replay = await call(2, 'v1');
    expect(replay.headers.get(REPLAYED_HEADER)).toBe('true');
    expect(replay.headers.get('x-cost')).toBe('3');
    expect(replay.headers.get('x-trace')).toBeNull();
    expect((await call(1, 'v2')).status).toBe(422);
  });

  it('aborts a response whose outcome could not be stored, unless failOpen', async () => {
    const failingComplete = (): IdempotencyStore => {
      const inner = createMemoryStore();
      return {
        capabilities: inner.capabilities,
        acquire: (input) => inner.acquire(input),
        release: (input) => inner.release(input),
        extend: (input) => inner.extend(input),
        get: (key) => inner.get(key),
        complete: async () => {
          throw new Error('connection reset');
        },
      };
    };
    const handler = async () => chunkedResponse(['a', 'b']);
    // Core retries the final write in the background (until maxHoldMs); the response waits
    // for it completionWaitMs.
    const retrying = { completionWaitMs: 100, maxHoldMs: 1_000 };
    const closed = withIdempotency(handler, {
      scope: 'global',
      store: failingComplete(),
      onWarning: () => {},
      ...retrying,
    });
    await expect(readChunks(await closed(post('fc')))).rejects.toThrow(/not recorded yet/);
    const open = withIdempotency(handler, {
      scope: 'global',
      store: failingComplete(),
      failOpen: true,
      onWarning: () => {},
      ...retrying,
    });
    expect(await readChunks(await open(post('fc')))).toEqual(['a', 'b']);
  });
});
