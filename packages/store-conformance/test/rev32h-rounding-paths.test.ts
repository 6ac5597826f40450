import { describe, expect, it } from 'vitest';
import { failingChecks } from './bad-input-runs.js';

// rev32h: the rounding check exercised only a first acquire, an extend, a complete and a
// release; a store that rounded those but renewed a redelivered acquire with the fractional
// durations as sent (its own path in every reference store) passed it.
describe('the rounding check covers a redelivered acquire', () => {
  it('a store leaving a redelivered acquire fractional fails the rounding check only', async () => {
    const failed = await failingChecks('fractional-redelivery');
    expect(failed).toHaveLength(1);
    expect(failed[0]).toMatch(/fractional durations are rounded up/);
  });
  it('the reference store still passes every bad input check', async () => {
    expect(await failingChecks('none')).toEqual([]);
  });
});

// rev32h: the length check sent only 'k' strings, so a limit counted in characters (code
// points, as PostgreSQL's varchar counts) of 4096 met it while taking 8 KiB of code units.
describe('the length check counts UTF-16 code units', () => {
  it('a store limiting keys and owners to 4096 code points fails the length check only', async () => {
    const failed = await failingChecks('code-point-limit');
    expect(failed).toHaveLength(1);
    expect(failed[0]).toMatch(/storage key or owner longer than 4096/);
  });
});
