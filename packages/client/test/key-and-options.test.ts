import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import {
  createIdempotentFetch,
  getIdempotencyInfo,
  type IdempotentFetchOptions,
} from '../src/index.js';
import { inOrder, postJson, recordingSleep, startHarness } from './support/harness.js';

describe('keys, hooks and options', () => {
  it('sends the caller key exactly as given, on every attempt, and reports it', async () => {
    const h = await startHarness(inOrder({ kind: 'status', status: 503 }));
    const idemFetch = createIdempotentFetch({ sleep: recordingSleep().sleep });
    const response = await idemFetch(
      `${h.url}/charges`,
      postJson({ item: 'w' }, { headers: { 'Idempotency-Key': 'order-w-1' } }),
    );
    expect(h.server.seen.map((s) => s.key)).toEqual(['order-w-1', 'order-w-1']);
    expect(getIdempotencyInfo(response)?.key).toBe('order-w-1');
  });

  it('uses a key function, once per logical call', async () => {
    const h = await startHarness(inOrder({ kind: 'drop-before' }));
    let calls = 0;
    const idemFetch = createIdempotentFetch({
      sleep: recordingSleep().sleep,
      keyFormat: 'bare',
      key: ({ method, body }) => `${method.toLowerCase()}-${++calls}-${String(body).length}`,
    });
    const response = await idemFetch(`${h.url}/charges`, postJson({ item: 'x' }));
    expect(response.status).toBe(201);
    expect(calls).toBe(1);
    expect(h.server.seen.map((s) => s.key)).toEqual(['post-1-12', 'post-1-12']);
  });

  it('refuses an invalid key from a key function before sending', async () => {
    const h = await startHarness();
    const idemFetch = createIdempotentFetch({ key: () => 'bad\nkey' });
    await expect(idemFetch(`${h.url}/charges`, postJson({ item: 'y' }))).rejects.toMatchObject({
      code: 'INVALID_KEY',
    });
    expect(h.server.seen).toHaveLength(0);
  });

  it('encodes a FormData body once, so a retry sends the same bytes and gets the replay', async () => {
    const h = await startHarness(inOrder({ kind: 'drop-after' }));
    const idemFetch = createIdempotentFetch({ sleep: recordingSleep().sleep });
    const form = new FormData();
    form.set('item', 'z');
    form.set('file', new Blob([new Uint8Array([0, 1, 2, 255])]), 'f.bin');
    const response = await idemFetch(`${h.url}/charges`, { method: 'POST', body: form });
    expect(response.status).toBe(201);
    expect(getIdempotencyInfo(response)).toMatchObject({ attempts: 2, replayed: true });
    const [first, second] = h.server.seen;
    expect(second?.body).toBe(first?.body);
    expect(second?.key).toBe(first?.key);
    expect(h.app.total()).toBe(1);
  });

  it('refuses to derive a content key from FormData (its boundary is random)', async () => {
    const h = await startHarness();
    const idemFetch = createIdempotentFetch({ key: 'content' });
    const form = new FormData();
    form.set('item', 'z');
    await expect(
      idemFetch(`${h.url}/charges`, { method: 'POST', body: form }),
    ).rejects.toMatchObject({ code: 'KEY_NOT_DERIVABLE' });
    expect(h.server.seen).toHaveLength(0);
  });

  it('keys PATCH by default and buffers a Node stream body', async () => {
    const h = await startHarness(inOrder({ kind: 'drop-after' }));
    const idemFetch = createIdempotentFetch({ sleep: recordingSleep().sleep });
    const body = Readable.from([Buffer.from('{"item":'), Buffer.from('"node"}')]);
    const response = await idemFetch(`${h.url}/charges/1`, {
      method: 'PATCH',
      body,
    } as unknown as RequestInit);
    expect(response.status).toBe(201);
    expect(getIdempotencyInfo(response)).toMatchObject({ attempts: 2, replayed: true });
    expect(h.server.seen.map((s) => s.body)).toEqual(['{"item":"node"}', '{"item":"node"}']);
    expect(h.app.executions.get('node')).toBe(1);
  });

  it('survives an onAttempt hook that throws', async () => {
    const h = await startHarness(inOrder({ kind: 'status', status: 500 }));
    const idemFetch = createIdempotentFetch({
      sleep: recordingSleep().sleep,
      onAttempt: () => {
        throw new Error('broken logger');
      },
    });
    const response = await idemFetch(`${h.url}/charges`, postJson({ item: 'hook' }));
    expect(response.status).toBe(201);
    expect(h.server.seen).toHaveLength(2);
  });

  it('does not start a backoff that would pass the deadline', async () => {
    const h = await startHarness(() => ({ kind: 'drop-before' }));
    const { waits, sleep } = recordingSleep();
    const idemFetch = createIdempotentFetch({
      deadlineMs: 1_000,
      initialDelayMs: 5_000,
      random: () => 0.9,
      sleep,
    });
    const error = await idemFetch(`${h.url}/charges`, postJson({ item: 'late' })).catch(
      (e: unknown) => e,
    );
    expect(error).toMatchObject({ code: 'DEADLINE_EXCEEDED', attempts: 1 });
    expect(waits).toEqual([]);
    expect(h.server.seen).toHaveLength(1);
  });

  it('rejects at once when the signal is already aborted, sending nothing', async () => {
    const h = await startHarness();
    const idemFetch = createIdempotentFetch();
    const signal = AbortSignal.abort(new Error('too late'));
    await expect(
      idemFetch(`${h.url}/charges`, postJson({ item: 'pre' }, { signal })),
    ).rejects.toThrow('too late');
    expect(h.server.seen).toHaveLength(0);
  });

  it('checks its options', () => {
    expect(() => createIdempotentFetch({ maxAttempts: 0 })).toThrow(RangeError);
    expect(() => createIdempotentFetch({ attemptTimeoutMs: -1 })).toThrow(RangeError);
    expect(() => createIdempotentFetch({ deadlineMs: Number.NaN })).toThrow(RangeError);
  });

  it('refuses every documented option of the wrong kind with a RangeError naming it', () => {
    const bad: [IdempotentFetchOptions, RegExp][] = [
      [{ fetch: 'fetch' as never }, /^fetch must be a function, got "fetch"$/],
      [{ methods: 'POST' as never }, /^methods must be an array/],
      [{ methods: ['POST', 'PUT X'] }, /^methods\[1\] must be an HTTP token/],
      [{ methods: ['POST', 7 as never] }, /^methods\[1\] must be an HTTP token/],
      [{ key: 'uuid' as never }, /^key must be 'random', 'content' or a function, got "uuid"$/],
      [{ key: 42 as never }, /^key must be/],
      [{ headerName: 'Idempotency Key' }, /^headerName must be an HTTP token/],
      [{ headerName: '' }, /^headerName must be an HTTP token/],
      [{ headerName: 'Idem:Key' }, /^headerName must be an HTTP token/],
      [{ keyFormat: 'quoted' as never }, /^keyFormat must be 'sf-string' or 'bare', got "quoted"$/],
      [{ replayHeader: 'Idempotent Replayed' }, /^replayHeader must be an HTTP token/],
      [{ resumeStreams: 'yes' as never }, /^resumeStreams must be false, true or/],
      [{ resumeStreams: { maxResumes: 0 } }, /^resumeStreams.maxResumes must be an integer/],
      [{ minDelayMs: -1 }, /^minDelayMs must be a non-negative number$/],
      [{ isInProgress: true as never }, /^isInProgress must be a function/],
      [
        { isRetryableStatus: [503] as never },
        /^isRetryableStatus must be a function, got an array$/,
      ],
      [{ onAttempt: 'log' as never }, /^onAttempt must be a function/],
      [{ sleep: 100 as never }, /^sleep must be a function/],
      [{ random: 0.5 as never }, /^random must be a function/],
      [{ now: new Date() as never }, /^now must be a function, got an object$/],
    ];
    for (const [options, message] of bad) {
      expect(() => createIdempotentFetch(options), JSON.stringify(Object.keys(options))).toThrow(
        RangeError,
      );
      expect(() => createIdempotentFetch(options)).toThrow(message);
    }
  });

  it('accepts every documented option of the right kind, and undefined as the default', () => {
    expect(() =>
      createIdempotentFetch({
        fetch: (input, init) => fetch(input, init),
        methods: ['post', 'PUT', 'PATCH'],
        key: 'content',
        headerName: 'X-Idempotency-Key',
        keyFormat: 'bare',
        replayHeader: 'X-Replayed',
        resumeStreams: {},
        isInProgress: (answer) => answer.status === 409,
        isRetryableStatus: (status) => status >= 500,
        onAttempt: () => undefined,
        sleep: async () => undefined,
        random: () => 0,
        now: () => 0,
      }),
    ).not.toThrow();
    expect(() =>
      createIdempotentFetch({ methods: [], resumeStreams: false, key: 'random' }),
    ).not.toThrow();
    expect(() =>
      createIdempotentFetch({ key: async () => 'k', keyFormat: 'sf-string' }),
    ).not.toThrow();
    expect(() =>
      createIdempotentFetch({
        fetch: undefined,
        methods: undefined,
        key: undefined,
        headerName: undefined,
        onAttempt: undefined,
        resumeStreams: undefined,
      }),
    ).not.toThrow();
  });

  it('key: "content" derives the same key from a URL spelled with a default port or an upper-case host', async () => {
    const seen: string[] = [];
    const idemFetch = createIdempotentFetch({
      key: 'content',
      keyFormat: 'bare',
      fetch: async (_input, init) => {
        seen.push(new Headers(init?.headers).get('idempotency-key') ?? '');
        return new Response('{}', { status: 201 });
      },
    });
    await idemFetch('https://API.example.com:443/v1/./charges', postJson({ item: 'n' }));
    await idemFetch('https://api.example.com/v1/charges', postJson({ item: 'n' }));
    // A relative URL (a custom fetch that resolves it itself) keeps its spelling.
    await idemFetch('/v1/charges', postJson({ item: 'n' }));
    expect(seen[0]).toBe(seen[1]);
    expect(seen[2]).not.toBe(seen[0]);
    expect(seen[2]).toMatch(/^[0-9a-f]{64}$/);
  });
});
