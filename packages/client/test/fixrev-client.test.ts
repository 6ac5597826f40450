/**
 * fixrev: attacks on 2ddf0c4 (@idem/client): option validation must not refuse the README's
 * and llm-api's options, content keys of URLs that needed no normalizing must not change,
 * runBatch's copy, and async onAttempt rejections.
 */
import { deriveKey } from '@idem/core';
import { describe, expect, it } from 'vitest';
import {
  type AttemptEvent,
  createIdempotentFetch,
  type IdempotentFetchOptions,
  runBatch,
} from '../src/index.js';

/** A fetch that records every attempt's URL and key header, answering 201. */
function recorder(status = 201) {
  const seen: Array<{ url: string; key: string | null }> = [];
  const fetch = async (input: RequestInfo | URL, init?: RequestInit) => {
    const request = new Request(input, init);
    seen.push({ url: request.url, key: request.headers.get('idempotency-key') });
    return new Response('{}', { status, headers: { 'content-type': 'application/json' } });
  };
  return { seen, fetch };
}

describe('fixrev: option sets from the README and apps/llm-api are accepted', () => {
  const onAttempt = (e: AttemptEvent) => void e;
  const route = recorder().fetch;
  const sets: Array<[string, IdempotentFetchOptions | undefined]> = [
    ['no options', undefined],
    ['empty', {}],
    ['README quick start', { attemptTimeoutMs: 10_000, deadlineMs: 60_000, onAttempt }],
    ['README openai', { attemptTimeoutMs: 120_000, deadlineMs: 600_000 }],
    ['README anthropic', { attemptTimeoutMs: 120_000 }],
    [
      'llm-api harness',
      {
        attemptTimeoutMs: 1_000,
        maxAttempts: 10,
        initialDelayMs: 50,
        maxDelayMs: 300,
        maxRetryAfterMs: 300,
        onAttempt,
      },
    ],
    ['llm-api resumeStreams false', { resumeStreams: false }],
    ['llm-api route', { fetch: route }],
    ['llm-api patient', { maxAttempts: 60, maxDelayMs: 250, attemptTimeoutMs: 5_000 }],
    [
      'every documented option',
      {
        fetch: route,
        methods: ['post', 'PUT', 'patch', 'DELETE'],
        key: 'content',
        headerName: 'X-Idempotency-Key',
        keyFormat: 'bare',
        replayHeader: 'X-Replayed',
        resumeStreams: { maxResumes: 1 },
        maxAttempts: 1,
        initialDelayMs: 0,
        maxDelayMs: 0,
        minDelayMs: 0,
        maxRetryAfterMs: 0,
        inProgressWaitMs: 0,
        maxInProgressAttempts: 1,
        isInProgress: () => false,
        attemptTimeoutMs: 1,
        deadlineMs: 1,
        isRetryableStatus: () => false,
        maxBufferedBodyBytes: 0,
        onAttempt: async () => {},
        sleep: async () => {},
        random: () => 0.5,
        now: () => 0,
      },
    ],
    ['resumeStreams {}', { resumeStreams: {} }],
    ['resumeStreams true (the default, as before the checks)', { resumeStreams: true }],
    ['a key function', { key: () => 'k' }],
    [
      'every option undefined',
      {
        fetch: undefined,
        key: undefined,
        methods: undefined,
        onAttempt: undefined,
        resumeStreams: undefined,
        headerName: undefined,
      },
    ],
  ];
  for (const [name, options] of sets) {
    it(`accepts ${name}`, () => {
      expect(() => createIdempotentFetch(options)).not.toThrow();
    });
  }

  it('still refuses bad values with a RangeError', () => {
    for (const bad of [
      { headerName: 'Idempotency Key' },
      { methods: 'POST' },
      { keyFormat: 'quoted' },
      { key: 'uuid' },
      { resumeStreams: 1 },
      { onAttempt: 'log' },
    ]) {
      expect(() => createIdempotentFetch(bad as never), JSON.stringify(bad)).toThrow(RangeError);
    }
  });
});

describe('fixrev: content keys', () => {
  const body = JSON.stringify({ amount: 500, currency: 'eur' });
  async function keyOf(url: string | URL | Request) {
    const r = recorder();
    const idemFetch = createIdempotentFetch({ fetch: r.fetch, key: 'content', keyFormat: 'bare' });
    if (url instanceof Request) await idemFetch(url);
    else
      await idemFetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body,
      });
    return r.seen[0]?.key;
  }

  it('a URL that needs no normalizing keeps the key it had before the fix (method, URL as given, body)', async () => {
    for (const url of [
      'https://api.example.com/charges',
      'https://api.example.com/v1/charges?x=1&y=2',
      'http://127.0.0.1:8080/a/b',
      'https://api.example.com/',
    ]) {
      expect(await keyOf(url), url).toBe(deriveKey({ method: 'POST', url, body }));
    }
  });

  it('two spellings of one URL, a URL object and a Request give one key', async () => {
    const canonical = await keyOf('https://api.example.com/charges');
    expect(await keyOf('HTTPS://API.Example.com:443/v1/../charges')).toBe(canonical);
    expect(await keyOf(new URL('https://api.example.com/charges'))).toBe(canonical);
    expect(
      await keyOf(
        new Request('https://api.example.com/charges', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body,
        }),
      ),
    ).toBe(canonical);
  });

  it('different URLs still give different keys', async () => {
    expect(await keyOf('https://api.example.com/charges')).not.toBe(
      await keyOf('https://api.example.com/charges/'),
    );
    expect(await keyOf('https://api.example.com/charges?a=1')).not.toBe(
      await keyOf('https://api.example.com/charges?a=2'),
    );
  });
});

describe('fixrev: runBatch works on the items as they were', () => {
  it('items pushed, removed or replaced while the batch runs change nothing about it', async () => {
    const items = ['a', 'b', 'c', 'd', 'e'];
    const ran: string[] = [];
    const result = await runBatch(
      items,
      async (item, { index }) => {
        ran.push(item);
        if (index === 0) {
          items.push('late');
          items.splice(3, 1);
          items[4] = 'replaced';
        }
        await new Promise((resolve) => setTimeout(resolve, 5));
        return item.toUpperCase();
      },
      { concurrency: 1 },
    );
    expect(ran).toEqual(['a', 'b', 'c', 'd', 'e']);
    expect(result.results).toHaveLength(5);
    expect(result.results.map((r) => (r as { value?: string }).value)).toEqual([
      'A',
      'B',
      'C',
      'D',
      'E',
    ]);
  });

  it('the same items give the same batchId and keys on a re-run', async () => {
    const keys: string[][] = [];
    let batchIds: string[] = [];
    for (let run = 0; run < 2; run++) {
      const seen: string[] = [];
      const r = await runBatch([{ id: 1 }, { id: 2 }], async (_item, { key }) => {
        seen.push(key);
        return 1;
      });
      keys.push(seen.sort());
      batchIds = [...batchIds, r.batchId];
    }
    expect(keys[0]).toEqual(keys[1]);
    expect(batchIds[0]).toBe(batchIds[1]);
  });
});

describe('fixrev: onAttempt', () => {
  it('an async hook that rejects on every attempt: no unhandled rejection, the call succeeds', async () => {
    const unhandled: unknown[] = [];
    const listener = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', listener);
    try {
      let status = 503;
      const fetch = async () => {
        const s = status;
        status = 201;
        return new Response('{}', { status: s });
      };
      const idemFetch = createIdempotentFetch({
        fetch,
        sleep: async () => {},
        onAttempt: async () => {
          throw new Error('hook broke');
        },
      });
      const response = await idemFetch('https://api.example.com/x', { method: 'POST', body: '{}' });
      expect(response.status).toBe(201);
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', listener);
    }
  });

  it('a hook returning a thenable whose then throws, or an object whose then getter throws, breaks nothing', async () => {
    for (const returned of [
      {
        // biome-ignore lint/suspicious/noThenProperty: a hostile thenable on purpose
        then() {
          throw new Error('then broke');
        },
      },
      Object.defineProperty({}, 'then', {
        get() {
          throw new Error('getter broke');
        },
      }),
    ]) {
      const idemFetch = createIdempotentFetch({
        fetch: recorder().fetch,
        onAttempt: (() => returned) as never,
      });
      const response = await idemFetch('https://api.example.com/x', { method: 'POST', body: '{}' });
      expect(response.status).toBe(201);
    }
  });
});

describe('fixrev: abort during a resumable stream', () => {
  /** A fetch answering a keyed event stream (generation 1) whose body errors when the request's signal aborts. */
  function streamFetch() {
    const calls: Array<{ lastEventId: string | null }> = [];
    const fetch = async (input: RequestInfo | URL, init?: RequestInit) => {
      const request = new Request(input, init);
      calls.push({ lastEventId: request.headers.get('last-event-id') });
      const signal = init?.signal ?? request.signal;
      const encoder = new TextEncoder();
      const body = new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(encoder.encode('id: 1\ndata: a\n\n'));
          const fail = () =>
            controller.error(new DOMException('This operation was aborted', 'AbortError'));
          if (signal?.aborted) fail();
          else signal?.addEventListener('abort', fail, { once: true });
        },
      });
      return new Response(body, {
        status: 200,
        headers: { 'content-type': 'text/event-stream', 'idempotent-generation': '1' },
      });
    };
    return { calls, fetch };
  }

  it("the caller's abort mid-stream rejects the read with the caller's reason and sends no resume", async () => {
    const s = streamFetch();
    const idemFetch = createIdempotentFetch({ fetch: s.fetch, sleep: async () => {} });
    const controller = new AbortController();
    const response = await idemFetch('https://api.example.com/v1/chat', {
      method: 'POST',
      body: '{}',
      signal: controller.signal,
    });
    const reader = (response.body as ReadableStream<Uint8Array>).getReader();
    const first = await reader.read();
    expect(new TextDecoder().decode(first.value)).toBe('id: 1\ndata: a\n\n');
    const reason = new Error('user stopped');
    controller.abort(reason);
    await expect(reader.read()).rejects.toBe(reason);
    expect(s.calls).toHaveLength(1);
  });

  it('a break that is not an abort is still resumed (the abort check did not swallow resumes)', async () => {
    let n = 0;
    const fetch = async (input: RequestInfo | URL, init?: RequestInit) => {
      const request = new Request(input, init);
      n++;
      const encoder = new TextEncoder();
      const first = n === 1;
      const body = new ReadableStream<Uint8Array>({
        start(controller) {
          if (first) {
            controller.enqueue(encoder.encode('id: 1\ndata: a\n\n'));
            setTimeout(() => controller.error(new TypeError('terminated')), 5);
          } else {
            expect(request.headers.get('last-event-id')).toBe('1');
            controller.enqueue(encoder.encode('id: 2\ndata: b\n\n'));
            controller.close();
          }
        },
      });
      return new Response(body, {
        status: 200,
        headers: { 'content-type': 'text/event-stream', 'idempotent-generation': '1' },
      });
    };
    const idemFetch = createIdempotentFetch({ fetch, sleep: async () => {} });
    const response = await idemFetch('https://api.example.com/v1/chat', {
      method: 'POST',
      body: '{}',
      signal: new AbortController().signal,
    });
    expect(await response.text()).toBe('id: 1\ndata: a\n\nid: 2\ndata: b\n\n');
    expect(n).toBe(2);
  });
});
