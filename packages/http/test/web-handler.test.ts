import { spyStore } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { describe, expect, it, vi } from 'vitest';
import { REPLAYED_HEADER, withIdempotency } from '../src/index.js';

import { chunkedResponse, post, readChunks } from './web-requests.js';

const encoder = new TextEncoder();

describe('withIdempotency on Web Request/Response: streams and clients that leave', () => {
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
});
