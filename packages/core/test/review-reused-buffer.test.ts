import { describe, expect, it } from 'vitest';
import { answersSynchronously, createIdempotency, OutcomeNotRecordedError } from '../src/index.js';
import { encodeOutcomeWith, giveBackReused, isReusedBuffer } from '../src/outcome-codec.js';
import { FakeStore } from './support/fake-store.js';

// Review of wt/corecpu: the reused encoding buffer is lent to one encoding at a time and must
// always be given back, or every later encoding in the process allocates again.
describe('review: the reused encoding buffer', () => {
  it('is given back when an outcome fails to encode after the buffer was lent (a detached body)', async () => {
    const store = new FakeStore();
    const inner = store.complete.bind(store);
    // A store whose synchronous complete copies its input: the engine encodes into the reused buffer.
    store.complete = answersSynchronously(
      (input) => {
        void inner({ ...input, outcome: new Uint8Array(input.outcome) });
        return { ok: true } as const;
      },
      { copiesInput: true },
    );
    const idem = createIdempotency({ store });
    const begun = await idem.begin({ key: 'detached' });
    if (begun.kind !== 'acquired') throw new Error('expected acquired');
    const ab = new ArrayBuffer(8);
    const body = new Uint8Array(ab);
    structuredClone(ab, { transfer: [ab] }); // detaches `body` (length 0, `set` from it throws)
    await expect(begun.execution.complete({ meta: {}, body })).rejects.toBeInstanceOf(
      OutcomeNotRecordedError,
    );
    // The next encoding that may reuse the buffer gets it: it was given back.
    const next = encodeOutcomeWith({ meta: {}, body: new Uint8Array(4) }, true);
    const reused = isReusedBuffer(next);
    giveBackReused(next);
    expect(reused).toBe(true);
  });
});
