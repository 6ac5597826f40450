/**
 * workerd refuses random values at global scope, where a module usually makes its handler:
 * making one (live streams on, their default) must draw none; the first request may.
 */
import { createMemoryStore } from '@idem/store-memory';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { withIdempotency } from '../src/index.js';

afterEach(() => {
  vi.restoreAllMocks();
});

describe('making a handler draws no random value (workerd global scope)', () => {
  it('withIdempotency with the default live streams, then a request that streams', async () => {
    const refuse = () => {
      throw new Error('Disallowed operation called within global scope');
    };
    const uuid = vi.spyOn(globalThis.crypto, 'randomUUID').mockImplementation(refuse);
    const bytes = vi.spyOn(globalThis.crypto, 'getRandomValues').mockImplementation(refuse);
    const store = createMemoryStore();
    const handle = withIdempotency(
      () => new Response('data: 1\n\n', { headers: { 'content-type': 'text/event-stream' } }),
      { store, scope: 'global', onWarning: () => {} },
    );
    expect(uuid).not.toHaveBeenCalled();
    expect(bytes).not.toHaveBeenCalled();
    vi.restoreAllMocks();
    const post = () =>
      handle(
        new Request('http://localhost/s', {
          method: 'POST',
          headers: { 'idempotency-key': 'g1' },
          body: '{}',
        }),
      );
    expect(await (await post()).text()).toBe('data: 1\n\n');
    const replay = await post();
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(await replay.text()).toBe('data: 1\n\n');
  });
});
