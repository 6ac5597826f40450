// consumers32 (client): runBatch refused `itemKey: null` ("itemKey must be a function") while
// every other option of the client takes its default for `null` (a JSON config's empty field;
// client31 made attemptTimeoutMs and deadlineMs do so), runBatch's own batchId and concurrency
// included. Now `itemKey: null` is the default (index keys). And `batchId: null` beside an
// itemKey slipped past "itemKey needs a batchId" (null !== undefined) and took the id derived
// from the items, the hazard that check exists for; `signal: null` reached each item as null.
import { describe, expect, it } from 'vitest';
import { type BatchItemContext, runBatch } from '../src/index.js';

const seen = async (item: number, ctx: BatchItemContext) => ({
  item,
  key: ctx.key,
  signal: ctx.signal,
});

describe('consumers32: runBatch options given as null take their default', () => {
  it('itemKey: null keys the items by index, as when it is left out', async () => {
    const items = [10, 20, 30];
    const plain = await runBatch(items, seen, { batchId: 'b32' });
    const nulled = await runBatch(items, seen, { batchId: 'b32', itemKey: null });
    expect(nulled.results.map((r) => r.key)).toEqual(plain.results.map((r) => r.key));
    expect(nulled.results.every((r) => r.ok)).toBe(true);
    // Without a batchId too (itemKey null is no itemKey: the derived batch id is fine then).
    const derived = await runBatch(items, seen, { itemKey: null });
    expect(derived.results.map((r) => r.key)).toEqual(
      (await runBatch(items, seen)).results.map((r) => r.key),
    );
  });

  it('every option null at once is the defaults', async () => {
    const items = [1, 2];
    const nulled = await runBatch(items, seen, {
      batchId: null,
      itemKey: null,
      concurrency: null,
      signal: null,
    });
    const plain = await runBatch(items, seen);
    expect(nulled).toEqual(plain);
    expect(nulled.results.map((r) => r.ok && r.value.signal)).toEqual([undefined, undefined]);
  });

  it('an itemKey with batchId: null is refused as without a batchId', async () => {
    await expect(
      runBatch([{ id: 'a' }], async () => 1, { batchId: null, itemKey: (o) => o.id }),
    ).rejects.toMatchObject({
      code: 'INVALID_INPUT',
      message: expect.stringContaining('itemKey needs a batchId'),
    });
  });
});
