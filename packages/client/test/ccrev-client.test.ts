// ccrev review of @idem/client against a real node:http server behind @idem/http on loopback.
// Findings that were fixed say FIXED (was FINDING ...).
import { isIdemError } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { createIdempotentFetch, type FetchFunction, IdemClientError } from '../src/index.js';
import { startHarness } from './support/harness.js';

const post = { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"a":1}' };

describe('ccrev client: a fetch option that answers something other than a Response', () => {
  // FIXED (was FINDING LOW): a wrapper that forgets its `return` (it sends the request, then
  // resolves undefined) was taken for a network error: the request went out maxAttempts times
  // with backoff, then RETRIES_EXHAUSTED whose cause was "Cannot read properties of undefined";
  // one that resolves a plain object threw a bare TypeError. Now: one attempt, INVALID_INPUT.
  it.each<[string, (sent: Promise<Response>) => unknown]>([
    ['undefined (a wrapper without return)', () => undefined],
    ['a plain object', () => ({ ok: true })],
    ['null', () => null],
  ])('resolving %s: INVALID_INPUT after one attempt, not retried', async (_, answer) => {
    const h = await startHarness();
    const wrapper = (async (input, init) => {
      const sent = globalThis.fetch(input, init);
      await (await sent).arrayBuffer();
      return answer(sent);
    }) as FetchFunction;
    const idemFetch = createIdempotentFetch({ fetch: wrapper, minDelayMs: 1, initialDelayMs: 1 });
    const error = await idemFetch(`${h.url}/charges`, post).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(IdemClientError);
    expect(isIdemError(error, 'INVALID_INPUT')).toBe(true);
    expect((error as IdemClientError).attempts).toBe(1);
    expect(h.server.seen).toHaveLength(1);
  });

  it('held: a Response of its own making is taken as it is', async () => {
    const idemFetch = createIdempotentFetch({
      fetch: async () => new Response('{"ok":true}', { status: 201 }),
    });
    const response = await idemFetch('http://127.0.0.1:9/charges', post);
    expect(response.status).toBe(201);
  });
});
