import { describe, expect, it } from 'vitest';
import { createMemoryStore } from '../src/index.js';

describe('memory store deadlines with its default clock (edge33)', () => {
  it('writes whole-ms deadlines: its default clock (performance.timeOrigin + performance.now()) reads a fraction', async () => {
    const store = createMemoryStore();
    const input = { key: 'k', fingerprint: '', owner: 'o', leaseMs: 1_000, retentionMs: 5_000 };
    const acquired = await store.acquire(input);
    expect(acquired.kind).toBe('acquired');
    if (acquired.kind === 'acquired') expect(Number.isInteger(acquired.leaseUntil)).toBe(true);
    const held = await store.get('k');
    expect(Number.isInteger(held?.leaseUntil)).toBe(true);
    expect(Number.isInteger(held?.expiresAt)).toBe(true);
    const extended = await store.extend({
      key: 'k',
      owner: 'o',
      leaseMs: 1_000,
      retentionMs: 5_000,
    });
    expect(extended.ok).toBe(true);
    expect(Number.isInteger((await store.get('k'))?.leaseUntil)).toBe(true);
    await store.complete({
      key: 'k',
      owner: 'o',
      outcome: new Uint8Array([1]),
      retentionMs: 5_000,
    });
    expect(Number.isInteger((await store.get('k'))?.expiresAt)).toBe(true);
    await store.close?.();
  });
});
