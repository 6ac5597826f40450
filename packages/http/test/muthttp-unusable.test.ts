import { createMemoryStore } from '@idem/store-memory';
import { describe, expect, it } from 'vitest';
import { finalOnceStarted, PROBLEM_TYPES, REPLAYED_HEADER, withIdempotency } from '../src/index.js';

// README "Failures": with `isFinal: finalOnceStarted` every response the handler gave is
// replayed, and a throw is recorded as a 500 problem. A handler that hands back a Response it
// cannot send (its body already read) failed as a throw does: recorded as that 500 and
// replayed, never released so that a retry runs the handler a second time. Mutation audit
// (muthttp): the checks of a used or locked body could be dropped with every other test
// passing (undici locks a body it consumed, so either check alone catches this case).

describe('a handler that returns a Response whose body was already read', () => {
  it('under finalOnceStarted: answered and recorded as the 500 handler-failed problem, replayed', async () => {
    let runs = 0;
    const handler = withIdempotency(
      async () => {
        runs++;
        const response = new Response('already read', { status: 201 });
        await response.text();
        return response;
      },
      { store: createMemoryStore(), scope: 'global', isFinal: finalOnceStarted },
    );
    const send = () =>
      handler(
        new Request('http://api.test/orders', {
          method: 'POST',
          headers: { 'idempotency-key': 'used-1' },
          body: 'x',
        }),
      );
    const first = await send();
    expect(first.status).toBe(500);
    expect(((await first.json()) as { type: string }).type).toBe(PROBLEM_TYPES.handlerFailed);
    const retry = await send();
    expect(retry.status).toBe(500);
    expect(retry.headers.get(REPLAYED_HEADER)).toBe('true');
    expect(runs).toBe(1);
  });
});
