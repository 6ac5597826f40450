import * as core from '@idem/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { derivations } from '../src/vectors.mjs';
import { RUNTIMES, type RunningServer } from './support/runtimes.js';

// One Hono app with @idem/hono on the memory store, from the built packages, served by each
// runtime as a real server on loopback and driven from here over HTTP. A runtime that is
// not installed fails its tests with the way to install it; none is skipped.

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

const post = (url: string, key: string, body?: unknown) =>
  fetch(url, {
    method: 'POST',
    headers: { 'idempotency-key': key, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });

const bytes = async (response: Response) => new Uint8Array(await response.arrayBuffer());

for (const runtime of RUNTIMES) {
  describe(runtime.name, () => {
    let server: RunningServer | undefined;
    let startError: unknown;
    const url = (path: string): string => {
      if (!server) throw startError ?? new Error(`${runtime.name} did not start`);
      return `${server.url}${path}`;
    };

    beforeAll(async () => {
      // Kept, not thrown here: every test then fails with it, and afterAll still runs.
      server = await Promise.resolve()
        .then(() => runtime.start())
        .catch((error: unknown) => {
          startError = error;
          return undefined;
        });
    });
    afterAll(async () => {
      await server?.stop();
    });

    it('runs the first request, then replays it byte for byte', async () => {
      const key = crypto.randomUUID();
      const first = await post(url('/api/charges'), key, { amount: 42 });
      expect(first.status).toBe(201);
      expect(first.headers.get('idempotent-replayed')).toBeNull();
      const firstBody = await bytes(first);
      const { execution, amount, fence } = JSON.parse(new TextDecoder().decode(firstBody));
      expect({ amount, fence }).toEqual({ amount: 42, fence: 1 });

      const again = await post(url('/api/charges'), key, { amount: 42 });
      expect(again.status).toBe(201);
      expect(again.headers.get('idempotent-replayed')).toBe('true');
      expect(again.headers.get('content-type')).toBe(first.headers.get('content-type'));
      expect(await bytes(again)).toEqual(firstBody);

      // The handler ran once: a new key runs it again, one execution later.
      const other = await post(url('/api/charges'), crypto.randomUUID(), { amount: 1 });
      expect((await other.json()).execution).toBe(execution + 1);
    });

    it('is served by that runtime, not another', async () => {
      const { runtime: identity } = await (await fetch(url('/runtime'))).json();
      expect(identity).toMatch(runtime.identity);
    });

    it('replays a binary body of every byte value byte for byte', async () => {
      const key = crypto.randomUUID();
      const first = await post(url('/api/bytes'), key);
      expect(first.status).toBe(201);
      const body = await bytes(first);
      expect(new Set(body).size).toBe(256);
      const replay = await post(url('/api/bytes'), key);
      expect(replay.headers.get('idempotent-replayed')).toBe('true');
      expect(replay.headers.get('content-type')).toBe('application/octet-stream');
      expect(await bytes(replay)).toEqual(body);
    });

    it('answers 422 when the key comes back with a different request', async () => {
      const key = crypto.randomUUID();
      expect((await post(url('/api/charges'), key, { amount: 5 })).status).toBe(201);
      const reused = await post(url('/api/charges'), key, { amount: 6 });
      expect(reused.status).toBe(422);
      expect(reused.headers.get('content-type')).toContain('application/problem+json');
      expect((await reused.json()).type).toMatch(/key-reused$/);
    });

    it('answers 409 to a duplicate while the first is in flight, then replays it', async () => {
      const key = crypto.randomUUID();
      const gate = crypto.randomUUID();
      const first = post(url(`/api/gated/${gate}`), key);
      // The duplicate goes only once the first is inside the handler, holding the key.
      const until = Date.now() + 30_000;
      for (;;) {
        const { waiting } = await (await fetch(url(`/gates/${gate}`))).json();
        if (waiting) break;
        if (Date.now() > until) throw new Error('The first request never reached its handler');
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      const duplicate = await post(url(`/api/gated/${gate}`), key);
      expect(duplicate.status).toBe(409);
      expect(duplicate.headers.get('retry-after')).toMatch(/^\d+$/);
      expect((await duplicate.json()).type).toMatch(/in-progress$/);

      expect((await fetch(url(`/gates/${gate}`), { method: 'POST' })).status).toBe(204);
      const done = await first;
      expect(done.status).toBe(201);
      const body = await bytes(done);
      expect(JSON.parse(new TextDecoder().decode(body)).opened).toBe(true);
      const replay = await post(url(`/api/gated/${gate}`), key);
      expect(replay.headers.get('idempotent-replayed')).toBe('true');
      expect(await bytes(replay)).toEqual(body);
    });

    it('streams server-sent events to the first caller and replays the same bytes', async () => {
      const key = crypto.randomUUID();
      const first = await post(url('/api/completions'), key);
      expect(first.status).toBe(200);
      expect(first.headers.get('content-type')).toContain('text/event-stream');
      const stream = await bytes(first);
      const text = new TextDecoder().decode(stream);
      expect(text.match(/^event: token$/gm)).toHaveLength(4);
      expect(text).toContain('"token":"wörld"');
      expect(text.trimEnd().endsWith('event: done\ndata: [DONE]')).toBe(true);

      const replay = await post(url('/api/completions'), key);
      expect(replay.status).toBe(200);
      expect(replay.headers.get('idempotent-replayed')).toBe('true');
      expect(replay.headers.get('content-type')).toContain('text/event-stream');
      expect(await bytes(replay)).toEqual(stream);
    });

    it("derives the same storage keys and fingerprints as Node's core", async () => {
      const runtimeInfo = await (await fetch(url('/runtime'))).json();
      // Which path core takes there: native node:crypto, or the portable SHA-256.
      expect(runtimeInfo.nativeHash).toBe(runtime.native);
      const { generated, ...derived } = await (await fetch(url('/vectors'))).json();
      const { generated: _ours, ...expected } = derivations(core);
      expect(derived).toEqual(expected);
      expect(generated.v4).toMatch(UUID_V4);
      expect(generated.v7).toMatch(UUID_V7);
    });
  });
}
