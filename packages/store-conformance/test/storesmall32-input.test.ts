import { describe, expect, it } from 'vitest';
import { failingChecks } from './bad-input-runs.js';

// The "bad input" checks: the reference store passes them; a store that takes a 2 MiB key or
// owner, or writes fractional deadlines (store-redis and store-dynamodb before storesmall32),
// fails exactly the matching one.
describe('the bad input checks bite', () => {
  it('the reference store passes them', async () => {
    expect(await failingChecks('none')).toEqual([]);
  });
  it('a store taking oversized keys and owners fails the length check only', async () => {
    const failed = await failingChecks('unbounded-strings');
    expect(failed).toHaveLength(1);
    expect(failed[0]).toMatch(/storage key or owner longer than 4096/);
  });
  it('a store writing fractional deadlines fails the rounding check only', async () => {
    const failed = await failingChecks('fractional-deadlines');
    expect(failed).toHaveLength(1);
    expect(failed[0]).toMatch(/fractional durations are rounded up/);
  });
});
