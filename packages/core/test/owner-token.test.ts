import { describe, expect, it, vi } from 'vitest';
import { createIdempotency, ManualClock } from '../src/index.js';
import { FakeStore } from './support/fake-store.js';

/** Owner tokens of `count` acquisitions of fresh keys by an engine of `module`. */
async function owners(module: typeof import('../src/index.js'), count: number) {
  const clock = new ManualClock();
  const idem = module.createIdempotency<unknown>({
    store: new FakeStore(clock),
    clock,
    heartbeatMs: false,
  });
  const seen: string[] = [];
  for (let i = 0; i < count; i++) {
    const begun = await idem.begin({ key: `k-${i}` });
    if (begun.kind !== 'acquired') throw new Error('not acquired');
    seen.push(begun.execution.owner);
    await begun.execution.release();
  }
  return seen;
}

describe('owner tokens', () => {
  it('differ for every acquisition, across engines, and across copies of the module', async () => {
    const a = await owners({ createIdempotency } as typeof import('../src/index.js'), 2_000);
    const b = await owners({ createIdempotency } as typeof import('../src/index.js'), 2_000);
    // A second copy of the module stands for another process: it draws its own random prefix.
    vi.resetModules();
    const other = await owners(await import('../src/index.js'), 2_000);
    const all = [...a, ...b, ...other];
    expect(new Set(all).size).toBe(all.length);
    for (const owner of all) {
      expect(owner).toMatch(/^[A-Za-z0-9_-]{22}\.[0-9a-z]+$/);
      expect(owner.length).toBeLessThanOrEqual(64);
    }
    // 128 random bits per copy: two copies never share the prefix.
    expect(other[0]!.slice(0, 22)).not.toBe(a[0]!.slice(0, 22));
  });
});
