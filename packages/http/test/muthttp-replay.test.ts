import { createMemoryStore } from '@idem/store-memory';
import { describe, expect, it } from 'vitest';
import { OUTCOME_FORMAT, REPLAYED_HEADER, replayResponse, withIdempotency } from '../src/index.js';

// A stored record that @idem/http could not have written is refused as corrupt (500
// outcome-unreadable), never sent (README, "Status codes of its own"): replay fidelity means
// the bytes the first client got, in its chunks, under a status a Web Response can carry.
// Mutation audit (muthttp): these checks could be dropped with every other test passing.

const corrupt = expect.objectContaining({ code: 'OUTCOME_CORRUPT' });

function outcome(meta: Record<string, unknown>, body: Uint8Array) {
  return {
    meta: { format: OUTCOME_FORMAT, status: 200, headers: [], chunks: [body.length], ...meta },
    body,
  };
}

describe('a stored outcome whose chunk lengths are not its body', () => {
  it('is refused, never replayed as a cut or padded body', async () => {
    const body = new TextEncoder().encode('abcdef');
    // As recorded: replayed whole, in its chunks.
    const good = replayResponse(outcome({ chunks: [2, 4] }, body));
    expect(await good.text()).toBe('abcdef');
    for (const chunks of [[7], [5], [2, 2], [2, 2, 4], [6, 1]])
      expect(() => replayResponse(outcome({ chunks }, body)), String(chunks)).toThrow(corrupt);
  });
});

describe('a stored outcome with a status no response of a handler was recorded with', () => {
  it('is refused: 1xx and 600 and above are never recorded', () => {
    const body = new TextEncoder().encode('x');
    expect(replayResponse(outcome({ status: 299 }, body)).status).toBe(299);
    for (const status of [100, 103, 199, 600, 999, 200.5])
      expect(() => replayResponse(outcome({ status }, body)), String(status)).toThrow(corrupt);
  });
});

describe('headers outside recordedHeaders', () => {
  it('go to the first caller only, never into a replay (Web path)', async () => {
    let runs = 0;
    const handler = withIdempotency(
      async () =>
        new Response(`run ${++runs}`, {
          status: 201,
          headers: {
            'content-type': 'text/plain',
            'x-request-id': 'req-1',
            'x-ratelimit-remaining': '9',
            location: '/orders/1',
          },
        }),
      { store: createMemoryStore(), scope: 'global' },
    );
    const send = () =>
      handler(
        new Request('http://api.test/orders', {
          method: 'POST',
          headers: { 'idempotency-key': 'h-1' },
          body: 'x',
        }),
      );
    const first = await send();
    expect(first.headers.get('x-request-id')).toBe('req-1');
    expect(await first.text()).toBe('run 1');
    const replay = await send();
    expect(replay.headers.get(REPLAYED_HEADER)).toBe('true');
    expect(await replay.text()).toBe('run 1');
    expect(replay.headers.get('location')).toBe('/orders/1');
    expect(replay.headers.get('content-type')).toBe('text/plain');
    expect(replay.headers.get('x-request-id')).toBeNull();
    expect(replay.headers.get('x-ratelimit-remaining')).toBeNull();
    expect(runs).toBe(1);
  });
});
