/**
 * Review tests of live streams on one process (in-process channel, memory store): byte
 * identity of an attached reader, resume exactness, isolation, exactly-once on resume paths.
 */
import { createMemoryLiveStreams } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import { describe, expect, it } from 'vitest';
import { GENERATION_HEADER, withIdempotency } from '../src/index.js';
import { gatedChunks } from './support/streamed-bodies.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function readAll(response: Response): Promise<Uint8Array> {
  return new Uint8Array(await response.arrayBuffer());
}

/** A handler that streams `chunks` (one per tick, after `gate` for the rest) and counts runs. */
function app(
  chunks: Uint8Array[],
  type = 'text/event-stream',
  options: {
    store?: ReturnType<typeof createMemoryStore>;
    channel?: ReturnType<typeof createMemoryLiveStreams>;
  } = {},
) {
  let runs = 0;
  const gated = gatedChunks(chunks);
  const handle = withIdempotency(
    async () => {
      runs++;
      return new Response(gated.body(), { headers: { 'content-type': type } });
    },
    {
      store: options.store ?? createMemoryStore(),
      scope: (request) => ({ principal: request.headers.get('x-tenant') ?? 'anonymous' }),
      onWarning: () => {},
      ...(options.channel ? { liveStreams: { channel: options.channel } } : {}),
    },
  );
  const post = (key: string, headers: Record<string, string> = {}, path = '/s') =>
    handle(
      new Request(`http://localhost${path}`, {
        method: 'POST',
        headers: { 'idempotency-key': key, ...headers },
        body: '{}',
      }),
    );
  return { post, open: gated.open, runs: () => runs };
}

describe('live streams, review: byte identity of an attached reader', () => {
  it('multi-byte UTF-8 split across chunks, binary bytes, thousands of tiny chunks', async () => {
    const text = new TextEncoder().encode('data: héllo wörld 😀 ✓\n\n'.repeat(40));
    const binary = Uint8Array.from({ length: 512 }, (_, i) => (i * 37) & 0xff);
    const all = new Uint8Array([...text, ...binary]);
    // One byte per chunk at first (every code point split), then odd sizes.
    const chunks: Uint8Array[] = [];
    for (let at = 0, size = 1; at < all.length; size = (size % 7) + 1) {
      chunks.push(all.slice(at, at + size));
      at += size;
    }
    const { post, open, runs } = app(chunks, 'application/x-ndjson');
    const first = post('b1');
    await sleep(20);
    const second = post('b1');
    open();
    const [a, b] = await Promise.all([first.then(readAll), second.then(readAll)]);
    expect(Buffer.from(a).equals(Buffer.from(all))).toBe(true);
    expect(Buffer.from(b).equals(Buffer.from(all))).toBe(true);
    expect(runs()).toBe(1);
  });
});

describe('live streams, review: isolation', () => {
  it('another operation (route) with the same key never attaches: it runs its own', async () => {
    const events = [
      new TextEncoder().encode('id: 1\ndata: one\n\n'),
      new TextEncoder().encode('id: 2\ndata: two\n\n'),
    ];
    const { post, open, runs } = app(events);
    const first = await post('i1', {}, '/a');
    const other = await post('i1', {}, '/b');
    expect(other.headers.get('idempotent-replayed')).toBeNull();
    open();
    await Promise.all([readAll(first), readAll(other)]);
    expect(runs()).toBe(2);
  });

  it('one channel given to two handlers over two stores: a duplicate in one never reads the other', async () => {
    const channel = createMemoryLiveStreams();
    const secret = app(
      [new TextEncoder().encode('data: secret\n\n'), new TextEncoder().encode('\n')],
      'text/event-stream',
      { channel },
    );
    let release = () => {};
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    const store = createMemoryStore();
    const other = withIdempotency(
      async () => {
        await held;
        return new Response('data: mine\n\n', { headers: { 'content-type': 'text/event-stream' } });
      },
      {
        store,
        scope: () => ({ principal: 'anonymous' }),
        onWarning: () => {},
        liveStreams: { channel },
      },
    );
    const req = () =>
      new Request('http://localhost/s', {
        method: 'POST',
        headers: { 'idempotency-key': 'i2' },
        body: '{}',
      });
    // Same scope, key and fence (1) in both stores: a storage key collision across stores.
    const first = await secret.post('i2');
    const running = other(req());
    await sleep(20);
    const duplicate = await other(req());
    release();
    secret.open();
    const text = new TextDecoder().decode(await readAll(duplicate));
    await Promise.all([readAll(first), running]);
    expect(text).not.toContain('secret');
  });
});

describe('live streams, review: resume never runs the handler', () => {
  it('a resume (generation named) after the first execution failed: 412, nothing run, key free', async () => {
    let runs = 0;
    const handle = withIdempotency(
      async () => {
        runs++;
        return new Response('boom', { status: 500 });
      },
      { store: createMemoryStore(), scope: 'global', onWarning: () => {} },
    );
    const post = (headers: Record<string, string> = {}) =>
      handle(
        new Request('http://localhost/s', {
          method: 'POST',
          headers: { 'idempotency-key': 'r1', ...headers },
          body: '{}',
        }),
      );
    expect((await post()).status).toBe(500);
    const resumed = await post({ 'last-event-id': '3', [GENERATION_HEADER]: '1' });
    expect(resumed.status).toBe(412);
    expect(runs).toBe(1);
    expect((await post()).status).toBe(500);
    expect(runs).toBe(2);
  });
});
