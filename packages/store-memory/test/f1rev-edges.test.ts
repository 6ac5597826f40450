/**
 * f1rev: edges of the remnants not covered by the model (f1rev-model.test.ts): the option's
 * bad values, and what a remnant does not remember (the owner and fence of the evicted lease).
 */
import { InvalidInputError, ManualClock } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { createMemoryStore } from '../src/index.js';
import { probeTable, remnantAt } from './table-invariants.js';

const LEASE_MS = 1_000;
const RETENTION_MS = 60_000;

describe('f1rev: forgetOriginsWhenFull bad values', () => {
  it('anything but a boolean is refused with InvalidInputError', () => {
    for (const value of [0, 1, 'false', 'true', {}, [], Number.NaN, new Boolean(false)]) {
      expect(
        () => createMemoryStore({ forgetOriginsWhenFull: value as never, sweepIntervalMs: 0 }),
        String(value),
      ).toThrow(InvalidInputError);
    }
  });

  it('undefined and null mean the default (false), as for every other option', async () => {
    for (const value of [undefined, null]) {
      const clock = new ManualClock(1_000_000_000);
      const store = createMemoryStore({
        clock,
        maxEntries: 1,
        maxBytes: 3_328,
        sweepIntervalMs: 0,
        forgetOriginsWhenFull: value as never,
      });
      const input = (key: string) => ({
        key,
        owner: `o-${key}`,
        fingerprint: '',
        leaseMs: LEASE_MS,
        retentionMs: RETENTION_MS,
      });
      // Fill with remnants until refused: with the default, none is ever forgotten.
      let refused = false;
      for (let i = 0; i < 20 && !refused; i++) {
        try {
          await store.acquire(input(`k${i}`));
          await store.release({ key: `k${i}`, owner: `o-k${i}`, retentionMs: RETENTION_MS });
        } catch {
          refused = true;
        }
      }
      expect(refused).toBe(true);
      expect(remnantAt(probeTable(store), 'k0')?.origin).toBe('o-k0');
    }
  });
});

describe('f1rev: what a remnant does not remember', () => {
  // FINDING (LOW, fixed): the remnant of an evicted passed lease kept its origin but not its
  // owner or fence, so a redelivered acquire by that very owner (its first answer lost) was
  // answered as a takeover with a new fence, where the record, had it not been evicted, would
  // have answered the redelivery (`takeover: false`, fence unchanged, store contract
  // "Redelivery"). The remnant keeps the owner and fence now (the owner's bytes accounted
  // when it is not the origin: a takeover's owner).
  it('a redelivered acquire of an evicted passed lease by its own owner is a redelivery', async () => {
    const clock = new ManualClock(1_000_000_000);
    const store = createMemoryStore({ clock, maxEntries: 1, sweepIntervalMs: 0 });
    const input = (key: string, owner: string) => ({
      key,
      owner,
      fingerprint: '',
      leaseMs: LEASE_MS,
      retentionMs: RETENTION_MS,
    });
    const first = await store.acquire(input('a', 'me'));
    expect(first).toMatchObject({ kind: 'acquired', fence: 1, takeover: false, origin: 'me' });
    clock.advance(LEASE_MS);
    // Another key evicts a's passed lease (a remnant stays), then is released and goes too.
    await store.acquire(input('b', 'other'));
    await store.release({ key: 'b', owner: 'other', retentionMs: RETENTION_MS });
    expect(remnantAt(probeTable(store), 'a')).toMatchObject({ origin: 'me', takeover: true });
    // The acquire of `a` by `me` again: its own acquisition, redelivered.
    const again = await store.acquire(input('a', 'me'));
    expect(again).toMatchObject({ kind: 'acquired', origin: 'me' });
    expect(again).toMatchObject({ takeover: false, fence: 1 });
  });
});
