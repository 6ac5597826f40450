import { ManualClock } from '@idem/core';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createMemoryStore } from '../src/index.js';
import { copied, detached } from '../src/input.js';

afterEach(() => {
  vi.unstubAllGlobals();
  vi.resetModules();
});

const samples = [
  '',
  'a',
  'k'.repeat(64),
  'AbCdEfGhIjKlMnOpQrStUv.1z',
  'caf\u00e9 \u00ff\u0080', // Latin-1 beyond ASCII
  'euro \u20ac', // beyond Latin-1: the native codec would cut it
  'pair \ud83d\ude00',
  'lone \ud800',
  'x'.repeat(1_024),
];

describe('copied (the strings a record keeps)', () => {
  it('is the same string for every kind of text, with the native codec and without it', async () => {
    for (const value of samples) expect(copied(value)).toBe(value);
    vi.stubGlobal('Buffer', undefined);
    vi.resetModules();
    const bare = await import('../src/input.js');
    for (const value of samples) expect(bare.copied(value)).toBe(value);
  });

  it('agrees with detached, its fallback, on random strings of every range', () => {
    for (let i = 0; i < 2_000; i++) {
      const length = (i * 37) % 200;
      let text = '';
      for (let j = 0; j < length; j++) {
        const range = (i + j) % 3 === 0 ? 0x80 : (i + j) % 3 === 1 ? 0x100 : 0x10000;
        text += String.fromCharCode((i * 7919 + j * 104729) % range);
      }
      expect(copied(text)).toBe(detached(text));
      expect(copied(text)).toBe(text);
    }
  });
});

describe('one object a record (the slot is the record)', () => {
  it('every write is seen by later reads, and no record handed out changes afterwards', async () => {
    const clock = new ManualClock();
    const store = createMemoryStore({ clock, sweepIntervalMs: 0 });
    const input = { key: 'k', owner: 'o1', fingerprint: 'fp', leaseMs: 1_000, retentionMs: 60_000 };
    await store.acquire(input);
    const running = await store.get('k');
    expect(running).toMatchObject({ status: 'in_progress', owner: 'o1', fence: 1 });
    clock.advance(10);
    expect(
      await store.extend({ key: 'k', owner: 'o1', leaseMs: 5_000, retentionMs: 60_000 }),
    ).toEqual({
      ok: true,
      leaseUntil: clock.now() + 5_000,
    });
    const outcome = new Uint8Array([1, 2, 3]);
    expect(await store.complete({ key: 'k', owner: 'o1', outcome, retentionMs: 1_000 })).toEqual({
      ok: true,
    });
    const done = await store.get('k');
    expect(done).toMatchObject({
      status: 'completed',
      owner: 'o1',
      fence: 1,
      leaseUntil: clock.now() + 5_000,
      expiresAt: clock.now() + 1_000,
    });
    expect([...(done?.outcome ?? [])]).toEqual([1, 2, 3]);
    // The record read while running is a copy: the writes since left it as it was.
    expect(running).toMatchObject({ status: 'in_progress', leaseUntil: clock.now() - 10 + 1_000 });
    expect(running?.outcome).toBeUndefined();
    // The operator's view has the record's fields only (not the slot's accounting).
    const inspected = await store.admin.inspect('k');
    expect(inspected).toMatchObject({ status: 'completed', fence: 1, outcomeBytes: 3 });
    expect(Object.keys(inspected ?? {})).not.toContain('cost');
    expect(Object.keys(inspected ?? {})).not.toContain('strings');
    await store.close();
  });
});
