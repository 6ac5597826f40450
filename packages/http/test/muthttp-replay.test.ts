import { describe, expect, it } from 'vitest';
import { OUTCOME_FORMAT, replayResponse } from '../src/index.js';

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
