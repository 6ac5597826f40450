import { createMemoryStore } from '@idem/store-memory';
import { describe, expect, it } from 'vitest';
import { REPLAYED_HEADER, withIdempotency } from '../src/index.js';
import { chunkedResponse, post } from './web-requests.js';

// Review of wt/corecpu: http records raw outcomes through core with the memory store (the
// reused encoding buffer, the reused replay view). Each key must replay its own bytes.
describe('review: http over the reused buffers', () => {
  it('concurrent recordings and replays of many keys, streamed and whole, each answer their own body', async () => {
    const store = createMemoryStore();
    let runs = 0;
    const fetchLike = withIdempotency(
      async (request: Request) => {
        runs++;
        const key = request.headers.get('idempotency-key')!;
        await new Promise((r) => setTimeout(r, Number(key.slice(1)) % 3));
        const body = `${key}:${'é'.repeat(50)}${key.repeat(30)}`;
        return Number(key.slice(1)) % 2
          ? chunkedResponse([body.slice(0, 10), body.slice(10)], {
              headers: { 'content-type': 'text/plain' },
            })
          : new Response(body, { headers: { 'content-type': 'text/plain' } });
      },
      { scope: 'global', store, onWarning: () => {} },
    );
    const keys = Array.from({ length: 120 }, (_, i) => `k${String(i).padStart(3, '0')}`);
    const expected = (key: string) => `${key}:${'é'.repeat(50)}${key.repeat(30)}`;
    const first = await Promise.all(keys.map(async (k) => (await fetchLike(post(k))).text()));
    first.forEach((t, i) => {
      expect(t).toBe(expected(keys[i]!));
    });
    const replays = await Promise.all(
      [...keys, ...keys].map(async (k) => {
        const r = await fetchLike(post(k));
        return [r.headers.get(REPLAYED_HEADER), await r.text()];
      }),
    );
    replays.forEach(([h, t], i) => {
      expect(h).toBe('true');
      expect(t).toBe(expected(keys[i % keys.length]!));
    });
    expect(runs).toBe(keys.length);
    // Bodies of every byte value and past the reused buffers' 64 KiB.
    const all = new Uint8Array(256 * 300).map((_, i) => i & 0xff);
    const big = new Uint8Array(70_000).map((_, i) => (i * 7) & 0xff);
    const bin = withIdempotency(
      async (request: Request) =>
        new Response(request.headers.get('idempotency-key') === 'all' ? all : big, {
          headers: { 'content-type': 'application/octet-stream' },
        }),
      { scope: 'global', store, onWarning: () => {} },
    );
    for (const k of ['all', 'big', 'all', 'big']) {
      const bytes = new Uint8Array(await (await bin(post(k))).arrayBuffer());
      expect(bytes).toEqual(k === 'all' ? all : big);
    }
    await store.close();
  });
});
