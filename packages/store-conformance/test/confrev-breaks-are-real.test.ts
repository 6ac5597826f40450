// confrev: each variant the suite does not catch (confrev-suite-mutants.test.ts) really breaks
// its guarantee: a direct reproduction per variant, so the findings are not a no-op wrapper.
import { type IdempotencyStore, ManualClock, StoreUnavailableError, systemClock } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { confmutVariants } from './confmut-mutants.js';
import { type SharedBug, sharedBackendOptions } from './confmut-shared.js';
import { variants } from './confrev-mutants.js';
import { createVariantStore } from './confrev-variants.js';

const L = 30_000;
const H = 3_600_000;
const make = (name: string) => {
  const clock = new ManualClock(1_000_000);
  const v = variants[name];
  if (!v) throw new Error(`no variant ${name}`);
  return { clock, store: createVariantStore(v, clock) };
};
const input = (owner: string, extra = {}) => ({
  key: 'k',
  fingerprint: 'fp',
  owner,
  leaseMs: L,
  retentionMs: H,
  ...extra,
});

describe('confrev: the escaped variants really break the contract', () => {
  it('takeover in the last 10% of a live lease: a second owner acquires while the lease is live', async () => {
    const { clock, store } = make('takeover in the last 10% of a live lease');
    const first = await store.acquire(input('a'));
    expect(first.kind).toBe('acquired');
    clock.advance(L * 0.95);
    const second = await store.acquire(input('b'));
    expect(second.kind).toBe('acquired'); // two owners inside a's lease
  });

  it('fence reset after an abandoned record expired: fence 1 again after fences 1 and 2', async () => {
    const { clock, store } = make(
      'fence reset after an abandoned (never completed) record expired',
    );
    await store.acquire(input('a', { retentionMs: 1_000 }));
    await store.release({ key: 'k', owner: 'a', retentionMs: 1_000 });
    const b = await store.acquire(input('b', { retentionMs: 1_000 }));
    expect(b).toMatchObject({ kind: 'acquired', fence: 2 });
    clock.advance(L + 1_000 + 10);
    const c = await store.acquire(input('c'));
    expect(c).toMatchObject({ kind: 'acquired', fence: 1 }); // reused
  });

  for (const name of [
    'replayed outcome over 64 KiB truncated by one byte (acquire path only)',
    'replayed outcome over 64 KiB answered empty (acquire path only)',
  ]) {
    it(`${name}: get is right, the replay is not`, async () => {
      const { store } = make(name);
      const outcome = new Uint8Array(256 * 1024).map((_, i) => i % 251);
      await store.acquire(input('a'));
      await store.complete({ key: 'k', owner: 'a', outcome, retentionMs: H });
      expect(Buffer.from((await store.get('k'))!.outcome!).equals(Buffer.from(outcome))).toBe(true);
      const found = await store.acquire(input('b'));
      expect(found.kind).toBe('found');
      if (found.kind !== 'found') return;
      expect(Buffer.from(found.record.outcome!).equals(Buffer.from(outcome))).toBe(false);
    });
  }

  it('outcome kept by reference: overwriting the caller buffer changes the replay', async () => {
    const { store } = make(
      'outcome kept by reference to the caller buffer (later mutation changes the replay)',
    );
    const buf = new TextEncoder().encode('charged 100');
    await store.acquire(input('a'));
    await store.complete({ key: 'k', owner: 'a', outcome: buf, retentionMs: H });
    buf.fill(0);
    const found = await store.acquire(input('b'));
    if (found.kind !== 'found') throw new Error('expected found');
    expect(new TextDecoder().decode(found.record.outcome)).not.toBe('charged 100');
  });

  it('complete by the owner of a released tombstone: the released key becomes completed', async () => {
    const { store } = make('complete by the owner of a released tombstone accepted');
    await store.acquire(input('a'));
    expect(await store.release({ key: 'k', owner: 'a', retentionMs: H })).toEqual({ ok: true });
    const late = await store.complete({
      key: 'k',
      owner: 'a',
      outcome: new Uint8Array([1]),
      retentionMs: H,
    });
    expect(late).toEqual({ ok: true });
    expect((await store.get('k'))?.status).toBe('completed');
  });

  it('extend by the owner of a released tombstone: the key is locked again', async () => {
    const { store } = make('extend by the owner of a released tombstone revives its lease');
    await store.acquire(input('a'));
    await store.release({ key: 'k', owner: 'a', retentionMs: H });
    const late = await store.extend({ key: 'k', owner: 'a', leaseMs: L, retentionMs: H });
    expect(late.ok).toBe(true);
    expect((await store.acquire(input('b'))).kind).toBe('found'); // a retry is refused
  });

  it('capabilities lie (declares 8 MiB): a 2 MiB outcome under the declared limit is refused', async () => {
    const { store } = make('capabilities lie: declares 8 MiB, refuses above 1 MiB');
    expect(store.capabilities.maxOutcomeBytes).toBe(8 * 1024 * 1024);
    await store.acquire(input('a'));
    await expect(
      store.complete({ key: 'k', owner: 'a', outcome: new Uint8Array(2 << 20), retentionMs: H }),
    ).rejects.toThrow();
  });

  it('capabilities lie (declares no limit): a 5 MiB outcome is refused', async () => {
    const { store } = make('capabilities lie: declares no limit, refuses above 4 MiB + 64 KiB');
    expect(store.capabilities.maxOutcomeBytes).toBeUndefined();
    await store.acquire(input('a'));
    await expect(
      store.complete({ key: 'k', owner: 'a', outcome: new Uint8Array(5 << 20), retentionMs: H }),
    ).rejects.toThrow();
  });

  it('bounded store drops a completed record inside retention: a retry of it executes again', async () => {
    const { store } = make(
      'bounded store drops completed records inside retention (keeps the 2 newest)',
    );
    for (const key of ['k1', 'k2', 'k3']) {
      await store.acquire({ ...input('a'), key });
      await store.complete({ key, owner: 'a', outcome: new Uint8Array([7]), retentionMs: H });
    }
    expect((await store.acquire({ ...input('b'), key: 'k1' })).kind).toBe('acquired');
  });

  for (const [name, write] of [
    [
      'release with a due retention deadline leaves the key unreadable (Redis before rev20)',
      (store: IdempotencyStore) => store.release({ key: 'k', owner: 'a', retentionMs: 1 }),
    ],
    [
      'extend with a due deadline leaves the key unreadable (Redis before rev20)',
      (store: IdempotencyStore) =>
        store.extend({ key: 'k', owner: 'a', leaseMs: 0, retentionMs: 0 }),
    ],
    [
      'redelivered acquire with a due deadline leaves the key unreadable (Redis before rev20)',
      (store: IdempotencyStore) => store.acquire(input('a', { leaseMs: 0, retentionMs: 0 })),
    ],
    [
      'complete with a due retention deadline leaves the key unreadable',
      (store: IdempotencyStore) =>
        store.complete({ key: 'k', owner: 'a', outcome: new Uint8Array([1]), retentionMs: 0 }),
    ],
  ] as const) {
    it(`${name}: the write answers ok, then every call on the key fails, for ever`, async () => {
      const { clock, store } = make(name);
      await store.acquire(input('a'));
      const answer = await write(store);
      expect(answer).toMatchObject('kind' in answer ? { kind: 'acquired' } : { ok: true });
      clock.advance(H);
      await expect(store.acquire(input('b'))).rejects.toThrow(StoreUnavailableError);
      await expect(store.get('k')).rejects.toThrow(StoreUnavailableError);
    });
  }

  it('fence reset after a due release: the next acquisition repeats fence 1', async () => {
    const { store } = make('fence reset after a release with a due retention deadline');
    expect(await store.acquire(input('a'))).toMatchObject({ kind: 'acquired', fence: 1 });
    expect(await store.release({ key: 'k', owner: 'a', retentionMs: 0 })).toEqual({ ok: true });
    expect(await store.acquire(input('b'))).toMatchObject({ kind: 'acquired', fence: 1 });
  });
});

// confmut: each variant the suite did not catch before its confmut checks really breaks its
// guarantee (test/confrev-suite-mutants.test.ts).
const makeConfmut = (name: string) => {
  const clock = new ManualClock(1_000_000);
  const v = confmutVariants[name];
  if (!v) throw new Error(`no variant ${name}`);
  return { clock, store: createVariantStore(v, clock) };
};
/** Two stores made by `options` with one context (as two processes) or two prefixes. */
const twoStores = async (bug: SharedBug, samePrefix: boolean) => {
  const options = sharedBackendOptions(bug);
  const clock = new ManualClock(1_000_000);
  const a = await options.createStore({ clock, prefix: 'p1:' });
  const b = await options.createStore({ clock, prefix: samePrefix ? 'p1:' : 'p2:' });
  return { a, b };
};

describe('confmut: the escaped variants really break the contract', () => {
  it('an acquire atomic only within its instance: two instances both acquire one free key', async () => {
    const { a, b } = await twoStores('instance-lock', true);
    const answers = await Promise.all([a.acquire(input('x')), b.acquire(input('y'))]);
    expect(answers.map((r) => r.kind)).toEqual(['acquired', 'acquired']);
  });

  it('the same store without the bug: exactly one of two instances acquires', async () => {
    const { a, b } = await twoStores('none', true);
    const answers = await Promise.all([a.acquire(input('x')), b.acquire(input('y'))]);
    expect(answers.map((r) => r.kind).sort()).toEqual(['acquired', 'found']);
  });

  it("key prefix ignored: a store of another prefix replays this one's outcome", async () => {
    const { a, b } = await twoStores('prefix-ignored', false);
    await a.acquire(input('x'));
    await a.complete({ key: 'k', owner: 'x', outcome: new Uint8Array([42]), retentionMs: H });
    const theirs = await b.acquire(input('y'));
    expect(theirs).toMatchObject({ kind: 'found', record: { status: 'completed', owner: 'x' } });
  });

  it("a server-clock store deciding by the process's Date.now(): a caller 2 h ahead takes a live lease over", async () => {
    const options = sharedBackendOptions('process-clock', 'server');
    const store = await options.createStore({ clock: systemClock, prefix: 'p:' });
    expect((await store.acquire(input('x'))).kind).toBe('acquired');
    const realNow = Date.now;
    Date.now = () => realNow() + 2 * H;
    try {
      expect((await store.acquire(input('y'))).kind).toBe('acquired'); // x's lease is live
    } finally {
      Date.now = realNow;
    }
  });

  for (const [name, cut] of [
    ['storage keys cut to their first 48 characters', (k: string) => `${k.slice(0, -1)}x`],
    ['storage keys cut to their last 48 characters', (k: string) => `x${k.slice(1)}`],
  ] as const) {
    it(`${name}: two 64-character keys one character apart share one record`, async () => {
      const { store } = makeConfmut(name);
      const key = 'k'.repeat(64);
      await store.acquire({ ...input('x'), key });
      expect((await store.acquire({ ...input('y'), key: cut(key) })).kind).toBe('found');
    });
  }

  it('a backend TTL of acquire + retention + 1 s: a live lease with a short retention is taken', async () => {
    const { clock, store } = makeConfmut(
      'in-progress record deleted at acquire + retention + 1 s (backend TTL in whole seconds, without the lease)',
    );
    await store.acquire(input('x', { retentionMs: 1 }));
    clock.advance(2_000); // 28 s of x's lease left
    expect(await store.acquire(input('y'))).toMatchObject({ kind: 'acquired', fence: 2 });
  });

  it('an extend that leaves the backend TTL: the extended lease is taken past the first one', async () => {
    const { clock, store } = makeConfmut('extend leaves the backend TTL where acquire put it');
    await store.acquire(input('x', { retentionMs: 1 }));
    clock.advance(L / 2);
    expect(await store.extend({ key: 'k', owner: 'x', leaseMs: L, retentionMs: 1 })).toMatchObject({
      ok: true,
    });
    clock.advance(L * 0.6); // inside the extended lease
    expect((await store.acquire(input('y'))).kind).toBe('acquired');
  });

  it('a released tombstone answered found to another fingerprint: the retry is refused', async () => {
    const { store } = makeConfmut('released tombstone answered found to another fingerprint');
    await store.acquire(input('x'));
    await store.release({ key: 'k', owner: 'x', retentionMs: H });
    const retry = await store.acquire(input('y', { fingerprint: 'fp-corrected' }));
    expect(retry).toMatchObject({ kind: 'found', record: { status: 'released' } });
  });

  it('a passed lease answered found to another fingerprint: never taken over', async () => {
    const { clock, store } = makeConfmut(
      'passed lease answered found to another fingerprint (no takeover)',
    );
    await store.acquire(input('x'));
    clock.advance(L + 1);
    const retry = await store.acquire(input('y', { fingerprint: 'fp-corrected' }));
    expect(retry).toMatchObject({ kind: 'found', record: { status: 'in_progress', owner: 'x' } });
  });

  it('trailing zero bytes dropped: a body ending in zeros is replayed cut', async () => {
    const { store } = makeConfmut(
      'trailing zero bytes of an outcome dropped (blocks padded with zeros)',
    );
    const outcome = Uint8Array.of(0x1f, 0x8b, 0, 0);
    await store.acquire(input('x'));
    await store.complete({ key: 'k', owner: 'x', outcome, retentionMs: H });
    const found = await store.acquire(input('y'));
    if (found.kind !== 'found') throw new Error('expected found');
    expect(found.record.outcome?.length).toBe(2);
  });
});
