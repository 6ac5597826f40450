// Review round 13 (rev13client): runBatch's arguments. No server is needed: every case is
// refused (or should be) before any item runs.
import { InvalidInputError } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { runBatch } from '../src/index.js';

describe('rev13 client: runBatch arguments', () => {
  // FIXED (was FINDING LOW): runBatch checked concurrency, batchId and what itemKey returns (the README:
  // "runBatch: InvalidInputError"), but not its arguments themselves: items that are not an
  // array (a Set, undefined) and a null options object fail with bare TypeErrors ("items.slice
  // is not a function"), `itemKey: 'id'` (a field name, where a function belongs: the mistake
  // the consumers' `key` option refuses) with "options.itemKey is not a function", and a
  // missing `fn` is not refused at all: the batch resolves with every item failed by a
  // TypeError, as if each item had been tried. Fix: InvalidInputError for each, before any
  // item runs.
  it('items, fn, options and itemKey of the wrong kind are InvalidInputError before any item runs', {
    timeout: 5_000,
  }, async () => {
    const fn = async (item: unknown) => item;
    const cases: [string, () => Promise<unknown>][] = [
      ['items: a Set', () => runBatch(new Set([1, 2]) as never, fn, { batchId: 'b' })],
      ['items: undefined', () => runBatch(undefined as never, fn, { batchId: 'b' })],
      ['fn: undefined', () => runBatch([1, 2], undefined as never, { batchId: 'b' })],
      ['options: null', () => runBatch([1], fn, null as never)],
      ['itemKey: a field name', () => runBatch([1], fn, { batchId: 'b', itemKey: 'id' as never })],
    ];
    const outcomes: string[] = [];
    for (const [name, start] of cases) {
      try {
        await start();
        outcomes.push(`${name}: ran`);
      } catch (error) {
        outcomes.push(
          `${name}: ${error instanceof InvalidInputError ? 'typed' : (error as Error).name}`,
        );
      }
    }
    expect(outcomes).toEqual(cases.map(([name]) => `${name}: typed`));
  });
});
