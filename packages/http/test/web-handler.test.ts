import type { IdempotencyStore } from '@idem/core';
import { spyStore } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { describe, expect, it, vi } from 'vitest';
import {
  createIdempotencyHandler,
  finalOnceStarted,
  PROBLEM_TYPES,
  REPLAYED_HEADER,
  withIdempotency,
} from '../src/index.js';

const encoder = new TextEncoder();

function post(
  key: string,
  body: unknown = { a: 1 },
  headers: Record<string, string> = {},
): Request {
  return new Request('http://api.test/items?x=1', {
    method: 'POST',
    headers: { 'idempotency-key': key, 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
}

function chunkedResponse(
  chunks: string[],
  options: { failAfter?: number; headers?: HeadersInit } = {},
): Response {
  let index = 0;
  return new Response(
    new ReadableStream<Uint8Array>({
      pull(controller) {
        if (options.failAfter !== undefined && index === options.failAfter) {
          controller.error(new Error('upstream broke'));
          return;
        }
        if (index === chunks.length) {
          controller.close();
          return;
        }
        controller.enqueue(encoder.encode(chunks[index++]));
      },
    }),
    { status: 200, headers: options.headers ?? { 'content-type': 'text/event-stream' } },
  );
}

async function readChunks(response: Response): Promise<string[]> {
  const out: string[] = [];
  const reader = response.body!.getReader();
  for (let read = await reader.read(); !read.done; read = await reader.read()) {
    out.push(new TextDecoder().decode(read.value));
  }
  return out;
}

describe('withIdempotency on Web Request/Response', () => {
  it('replays a stream as the same chunks in the same order', async () => {
    const handler = vi.fn(async () => chunkedResponse(['a', 'bb', 'ccc']));
    const fetchLike = withIdempotency(handler, {
      scope: 'global',
      store: createMemoryStore(),
      onWarning: () => {},
    });
    expect(await readChunks(await fetchLike(post('k1')))).toEqual(['a', 'bb', 'ccc']);
    const replay = await fetchLike(post('k1'));
    expect(replay.headers.get(REPLAYED_HEADER)).toBe('true');
    expect(await readChunks(replay)).toEqual(['a', 'bb', 'ccc']);
    expect(handler).toHaveBeenCalledTimes(1);
  });

  it('records before the body ends: nothing of the end reaches the caller before complete', async () => {
    const spied = spyStore(createMemoryStore());
    const fetchLike = withIdempotency(
      async () =>
        new Response('{"done":true}', {
          headers: { 'content-type': 'application/json', 'content-length': '13' },
        }),
      { scope: 'global', store: spied.store, onWarning: () => {} },
    );
    const response = await fetchLike(post('k2'));
    const reader = response.body!.getReader();
    const first = await reader.read();
    // A body of known length: its last bytes are held until the outcome is recorded.
    expect(spied.calls.complete).toBe(1);
    expect(new TextDecoder().decode(first.value)).toBe('{"done":true}');
    expect((await reader.read()).done).toBe(true);
  });

  it('releases a stream that breaks midway and errors it for the caller', async () => {
    const spied = spyStore(createMemoryStore());
    let runs = 0;
    const fetchLike = withIdempotency(
      async () => {
        runs++;
        return chunkedResponse(['one', 'two'], { failAfter: 1 });
      },
      { scope: 'global', store: spied.store, onWarning: () => {} },
    );
    await expect(readChunks(await fetchLike(post('k3')))).rejects.toThrow('upstream broke');
    expect(spied.calls).toMatchObject({ complete: 0, release: 1 });
    await expect(readChunks(await fetchLike(post('k3')))).rejects.toThrow('upstream broke');
    expect(runs).toBe(2);
  });

  it('keeps recording when the caller goes away, so a retry gets the replay', async () => {
    const spied = spyStore(createMemoryStore());
    const handler = vi.fn(async () => chunkedResponse(['x', 'y', 'z']));
    const fetchLike = withIdempotency(handler, {
      scope: 'global',
      store: spied.store,
      onWarning: () => {},
    });
    const response = await fetchLike(post('k4'));
    const reader = response.body!.getReader();
    await reader.read();
    await reader.cancel();
    await vi.waitFor(() => expect(spied.calls.complete).toBe(1));
    expect(await readChunks(await fetchLike(post('k4')))).toEqual(['x', 'y', 'z']);
    expect(handler).toHaveBeenCalledTimes(1);
  });

  it('records the response of a request whose client went away before the handler returned', async () => {
    const spied = spyStore(createMemoryStore());
    const controller = new AbortController();
    const fetchLike = withIdempotency(
      async () => {
        controller.abort();
        return chunkedResponse(['late ', 'answer']);
      },
      { scope: 'global', store: spied.store, onWarning: () => {} },
    );
    const request = new Request(post('k8'), { signal: controller.signal });
    await fetchLike(request);
    // Nobody reads the body: it is still read to its end and recorded.
    await vi.waitFor(() => expect(spied.calls.complete).toBe(1));
    expect(await readChunks(await fetchLike(post('k8')))).toEqual(['late ', 'answer']);
  });

  it('keeps the lease of a stream that outlives it after the caller left, then records it once', async () => {
    const spied = spyStore(createMemoryStore());
    let runs = 0;
    let aborted = false;
    const slowStream = () =>
      new Response(
        new ReadableStream<Uint8Array>({
          async start(controller) {
            // Ten events over ~1 s, three times the lease; the signal never aborts meanwhile.
            for (let i = 0; i < 10; i++) {
              controller.enqueue(encoder.encode(`data: ${i}\n\n`));
              await new Promise((resolve) => setTimeout(resolve, 100));
            }
            controller.close();
          },
        }),
        { headers: { 'content-type': 'text/event-stream' } },
      );
    const fetchLike = withIdempotency(
      async (_request, context) => {
        runs++;
        context?.signal.addEventListener('abort', () => {
          aborted = true; // the lease was lost while the stream was still producing
        });
        return slowStream();
      },
      { scope: 'global', store: spied.store, leaseMs: 300, heartbeatMs: 100, onWarning: () => {} },
    );
    const response = await fetchLike(post('k-long'));
    const reader = response.body!.getReader();
    await reader.read();
    await reader.cancel();
    await vi.waitFor(() => expect(spied.calls.complete).toBe(1), { timeout: 3_000 });
    expect(spied.calls.release).toBe(0);
    const replay = await fetchLike(post('k-long'));
    expect(replay.headers.get(REPLAYED_HEADER)).toBe('true');
    expect((await readChunks(replay)).join('')).toContain('data: 9');
    expect(runs).toBe(1);
    expect(aborted).toBe(false);
  });

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
