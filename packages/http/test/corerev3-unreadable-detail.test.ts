/**
 * corerev3: a stored outcome that cannot be read was answered with a 500 problem whose detail
 * was the error's message: the words of a custom outcomeCodec (a vault address, a token), a
 * key id, or the store's encoding, sent to any client that retried the key. The detail is now
 * a fixed text; the reason goes to onWarning.
 */
import type { OutcomeCodec } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import { expect, it } from 'vitest';
import { PROBLEM_TYPES, withIdempotency } from '../src/index.js';
import { post } from './web-requests.js';

it("an outcome the codec cannot open: a 500 whose detail says nothing of the codec's error", async () => {
  const secret = 'vault at 10.1.2.3 refused token s.hunter2';
  const outcomeCodec: OutcomeCodec = {
    seal: async (encoded) => encoded,
    open: async () => {
      throw new Error(secret);
    },
  };
  const warnings: string[] = [];
  const fetchLike = withIdempotency(async () => new Response('ok'), {
    scope: 'global',
    store: createMemoryStore(),
    outcomeCodec,
    onWarning: (message) => {
      warnings.push(message);
    },
  });
  const first = await fetchLike(post('k-sealed'));
  expect(first.status).toBe(200);
  const replay = await fetchLike(post('k-sealed'));
  expect(replay.status).toBe(500);
  const text = await replay.text();
  expect(JSON.parse(text).type).toBe(PROBLEM_TYPES.outcomeUnreadable);
  expect(text).not.toContain('hunter2');
  expect(text).not.toContain('10.1.2.3');
  // The operator still learns why.
  expect(warnings.some((warning) => warning.includes(secret))).toBe(true);
});

it('an outcome that does not decode: the same fixed detail', async () => {
  const memory = createMemoryStore();
  const fetchLike = withIdempotency(async () => new Response('ok'), {
    scope: 'global',
    store: {
      ...memory,
      capabilities: memory.capabilities,
      get: memory.get,
      complete: memory.complete,
      release: memory.release,
      extend: memory.extend,
      acquire: async (input) => {
        const result = await memory.acquire(input);
        if (result.kind === 'found' && result.record.outcome)
          return { ...result, record: { ...result.record, outcome: new Uint8Array([1, 2, 3]) } };
        return result;
      },
    },
    onWarning: () => {},
  });
  expect((await fetchLike(post('k-bad'))).status).toBe(200);
  const replay = await fetchLike(post('k-bad'));
  expect(replay.status).toBe(500);
  const problem = await replay.json();
  expect(problem.type).toBe(PROBLEM_TYPES.outcomeUnreadable);
  expect(problem.detail).toBe(
    'The response recorded for this key cannot be read; the request is not processed again with this key',
  );
});
