import { describe, expect, it } from 'vitest';
import { median, rotate, throughput } from '../src/measure.js';

describe('measure', () => {
  it('stops at the operation bound and counts every operation once', async () => {
    const seen: number[] = [];
    const rate = await throughput(
      8,
      async (i) => {
        seen.push(i);
        await Promise.resolve();
      },
      { ms: 60_000, maxOps: 1_000 },
    );
    expect(seen.sort((a, b) => a - b)).toEqual(Array.from({ length: 1_000 }, (_, i) => i));
    expect(rate).toBeGreaterThan(0);
  });

  it('stops at the time bound', async () => {
    let done = 0;
    await throughput(
      2,
      async () => {
        await new Promise((r) => setTimeout(r, 5));
        done++;
      },
      { ms: 50, maxOps: 1_000_000 },
    );
    expect(done).toBeGreaterThan(0);
    expect(done).toBeLessThan(100);
  });

  it('passes an operation error on', async () => {
    await expect(
      throughput(4, async () => Promise.reject(new Error('boom')), { ms: 1_000, maxOps: 10 }),
    ).rejects.toThrow('boom');
  });

  it('takes the median and rotates the order', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([5])).toBe(5);
    expect(() => median([])).toThrow();
    expect(rotate(['a', 'b', 'c'], 1)).toEqual(['b', 'c', 'a']);
    expect(rotate(['a', 'b', 'c'], 3)).toEqual(['a', 'b', 'c']);
  });
});
