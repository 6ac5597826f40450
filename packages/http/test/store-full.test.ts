import { createMemoryStore } from '@idem/store-memory';
import { describe, expect, it, vi } from 'vitest';
import { PROBLEM_TYPES, withIdempotency } from '../src/index.js';
import { post } from './web-requests.js';

describe('a bounded store that is full', () => {
  it('answers 503 store-full with Retry-After and runs nothing', async () => {
    // Room for one live record: the first request holds it while its handler runs.
    const store = createMemoryStore({ maxEntries: 1, sweepIntervalMs: 0 });
    let finish!: () => void;
    const holding = new Promise<void>((resolve) => {
      finish = resolve;
    });
    const handler = vi.fn(async (request: Request) => {
      if (request.headers.get('idempotency-key') === 'k-held') await holding;
      return Response.json({ ok: request.headers.get('idempotency-key') });
    });
    const fetchLike = withIdempotency(handler, {
      scope: 'global',
      store,
      unavailableRetryAfterSeconds: 3,
      onWarning: () => {},
    });
    const held = fetchLike(post('k-held'));
    await vi.waitFor(() => expect(handler).toHaveBeenCalledTimes(1));

    const full = await fetchLike(post('k-other'));
    expect(full.status).toBe(503);
    expect(full.headers.get('retry-after')).toBe('3');
    expect(full.headers.get('content-type')).toContain('application/problem+json');
    expect(await full.json()).toMatchObject({ type: PROBLEM_TYPES.storeFull, status: 503 });
    // Refused before anything ran.
    expect(handler).toHaveBeenCalledTimes(1);

    finish();
    expect((await held).status).toBe(200);
    await store.close?.();
  });
});
