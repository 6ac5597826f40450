// The broken variants (one guarantee each) the confrev review runs the suite against.
import { type AcquireInput, type StoredRecord, StoreUnavailableError } from '@idem/core';
import type { Overrides, VariantCtx } from './confrev-variants.js';

/** Takes the key from whoever holds it (operator force-release, then acquire). */
async function steal(c: VariantCtx, input: AcquireInput) {
  await c.inner.admin?.forceRelease(input.key);
  const r = await c.inner.acquire(input);
  // Hide the force-release's extra fence step: the shown fence grows by one.
  if (r.kind === 'acquired') c.fenceOffset.set(input.key, (c.fenceOffset.get(input.key) ?? 0) + 1);
  return r;
}

const resetFence = (c: VariantCtx, key: string, fence: number) => c.fenceOffset.set(key, fence - 1);

/** Acquire that remembers what each key held before, for the fence variants. */
function fenceAfter(
  when: (before: StoredRecord | undefined, c: VariantCtx, key: string) => boolean,
): Overrides['acquire'] {
  return async (input, c) => {
    const before = await c.inner.get(input.key);
    const r = await c.inner.acquire(input);
    if (r.kind === 'acquired' && r.fence > 1 && when(before, c, input.key))
      resetFence(c, input.key, r.fence);
    return r;
  };
}

const LAST = 'last-status:';
const track = (c: VariantCtx, key: string, status: string) => c.state.set(LAST + key, status);

/** The writes {@link unreadableAfterDueWrite} breaks a key on. */
type DueWrite = 'release' | 'extend' | 'redelivered acquire' | 'complete';

const UNREADABLE = 'unreadable:';

/**
 * store-redis before rev20 (d276dfe): a write whose new retention deadline is due when
 * written (`expiresAt - 1 <= now`: a release or complete with a retention of 0 or 1 ms, an
 * extend or a redelivered acquire with a lease and a retention adding up to at most 1 ms)
 * set the key's expiry in the past, then rewrote the header of a key Redis had just deleted:
 * a value of the header alone, without an expiry, that every later call failed to read
 * (`STORE_UNAVAILABLE`, for ever). The write itself answered ok. Here: the write is applied,
 * then every later call on the key throws `StoreUnavailableError`. The Redis bug had the
 * first three; `complete` (a whole new value there, never hit) is the same mistake in a store
 * that rewrites a completed record in place.
 */
function unreadableAfterDueWrite(write: DueWrite): Overrides {
  const check = (c: VariantCtx, key: string) => {
    if (c.state.get(UNREADABLE + key))
      throw new StoreUnavailableError('the record cannot be read', {
        cause: new Error('a header alone, without an expiry, where a record was'),
      });
  };
  const broken = (c: VariantCtx, key: string, which: DueWrite, deadlineMs: number) => {
    if (which === write && deadlineMs <= 1) c.state.set(UNREADABLE + key, true);
  };
  return {
    async acquire(i, c) {
      check(c, i.key);
      const before = await c.inner.get(i.key);
      const r = await c.inner.acquire(i);
      const redelivered = before?.status === 'in_progress' && before.owner === i.owner;
      if (r.kind === 'acquired' && redelivered)
        broken(c, i.key, 'redelivered acquire', i.leaseMs + i.retentionMs);
      return r;
    },
    async complete(i, c) {
      check(c, i.key);
      const r = await c.inner.complete(i);
      if (r.ok) broken(c, i.key, 'complete', i.retentionMs);
      return r;
    },
    async release(i, c) {
      check(c, i.key);
      const r = await c.inner.release(i);
      if (r.ok) broken(c, i.key, 'release', i.retentionMs);
      return r;
    },
    async extend(i, c) {
      check(c, i.key);
      const r = await c.inner.extend(i);
      if (r.ok) broken(c, i.key, 'extend', i.leaseMs + i.retentionMs);
      return r;
    },
    async get(key, c) {
      check(c, key);
      return c.inner.get(key);
    },
  };
}

export const variants: Record<string, Overrides> = {
  'complete without the owner check': {
    async complete(i, c) {
      const r = await c.inner.get(i.key);
      return c.inner.complete(r?.status === 'in_progress' ? { ...i, owner: r.owner } : i);
    },
  },
  'release by a non-owner': {
    async release(i, c) {
      const r = await c.inner.get(i.key);
      return c.inner.release(r?.status === 'in_progress' ? { ...i, owner: r.owner } : i);
    },
  },
  'extend without the owner check': {
    async extend(i, c) {
      const r = await c.inner.get(i.key);
      return c.inner.extend(r?.status === 'in_progress' ? { ...i, owner: r.owner } : i);
    },
  },
  'acquire that ignores a live lease (two owners)': {
    async acquire(i, c) {
      const r = await c.inner.acquire(i);
      if (r.kind === 'found' && r.record.status === 'in_progress' && r.record.owner !== i.owner) {
        const again = await steal(c, i);
        return again.kind === 'acquired' ? { ...again, takeover: false } : again;
      }
      return r;
    },
  },
  'takeover in the last 10% of a live lease': {
    async acquire(i, c) {
      const r = await c.inner.get(i.key);
      const now = c.clock.now();
      if (
        r?.status === 'in_progress' &&
        r.owner !== i.owner &&
        r.fingerprint === i.fingerprint &&
        now < r.leaseUntil &&
        now >= r.leaseUntil - i.leaseMs * 0.1
      ) {
        const taken = await steal(c, i);
        return taken.kind === 'acquired' ? { ...taken, takeover: true } : taken;
      }
      return c.inner.acquire(i);
    },
  },
  'fence not growing on takeover': {
    async acquire(i, c) {
      const r = await c.inner.acquire(i);
      if (r.kind === 'acquired' && r.takeover)
        c.fenceOffset.set(i.key, (c.fenceOffset.get(i.key) ?? 0) + 1);
      return r;
    },
  },
  'fence reset after release': {
    acquire: fenceAfter((before) => before?.status === 'released'),
  },
  'fence reset after retention expiry': {
    acquire: fenceAfter((before) => before === undefined),
  },
  'fence reset after an abandoned (never completed) record expired': {
    acquire: async (i, c) => {
      const r = await fenceAfter(
        (before, cc, key) =>
          before === undefined &&
          ['in_progress', 'released'].includes(String(cc.state.get(LAST + key))),
      )?.(i, c);
      if (r?.kind === 'acquired') track(c, i.key, 'in_progress');
      return r!;
    },
    async complete(i, c) {
      const r = await c.inner.complete(i);
      if (r.ok) track(c, i.key, 'completed');
      return r;
    },
    async release(i, c) {
      const r = await c.inner.release(i);
      if (r.ok) track(c, i.key, 'released');
      return r;
    },
    async delete(key, expected, c) {
      c.state.delete(LAST + key);
      return c.inner.admin!.delete(key, expected);
    },
  },
  'admin delete forgetting the fence': {
    async acquire(i, c) {
      const r = await c.inner.acquire(i);
      if (r.kind === 'acquired' && c.state.get(`deleted:${i.key}`)) {
        c.state.delete(`deleted:${i.key}`);
        resetFence(c, i.key, r.fence);
      }
      return r;
    },
    async delete(key, expected, c) {
      c.state.set(`deleted:${key}`, true);
      return c.inner.admin!.delete(key, expected);
    },
  },
  'completed record replayed after retention (get hides it)': {
    async complete(i, c) {
      const r = await c.inner.complete({ ...i, retentionMs: i.retentionMs * 10 });
      if (r.ok) c.state.set(`extra:${i.key}`, i.retentionMs * 9);
      return r;
    },
    async get(key, c) {
      const r = await c.inner.get(key);
      const extra = Number(c.state.get(`extra:${key}`) ?? 0);
      if (r?.status === 'completed' && r.expiresAt - extra <= c.clock.now()) return undefined;
      return r;
    },
    view(key, r, c) {
      const extra = Number(c.state.get(`extra:${key}`) ?? 0);
      return r.status === 'completed' ? { ...r, expiresAt: r.expiresAt - extra } : r;
    },
  },
  'one byte of the replayed outcome flipped (acquire path only)': {
    async acquire(i, c) {
      const r = await c.inner.acquire(i);
      if (r.kind === 'found' && r.record.outcome && r.record.outcome.length > 0) {
        const outcome = Uint8Array.from(r.record.outcome);
        outcome[outcome.length >> 1]! ^= 1;
        return { ...r, record: { ...r.record, outcome } };
      }
      return r;
    },
  },
  'replayed outcome over 64 KiB truncated by one byte (acquire path only)': {
    async acquire(i, c) {
      const r = await c.inner.acquire(i);
      if (r.kind === 'found' && r.record.outcome && r.record.outcome.length > 64 * 1024)
        return { ...r, record: { ...r.record, outcome: r.record.outcome.slice(0, -1) } };
      return r;
    },
  },
  'replayed outcome over 64 KiB answered empty (acquire path only)': {
    async acquire(i, c) {
      const r = await c.inner.acquire(i);
      if (r.kind === 'found' && r.record.outcome && r.record.outcome.length > 64 * 1024)
        return { ...r, record: { ...r.record, outcome: new Uint8Array(0) } };
      return r;
    },
  },
  'outcome kept by reference to the caller buffer (later mutation changes the replay)': {
    async complete(i, c) {
      const r = await c.inner.complete(i);
      if (r.ok) c.state.set(`ref:${i.key}`, i.outcome);
      return r;
    },
    view(key, r, c) {
      const ref = c.state.get(`ref:${key}`) as Uint8Array | undefined;
      return r.status === 'completed' && ref ? { ...r, outcome: ref } : r;
    },
  },
  'fingerprint mismatch not reported (found record shows the caller fingerprint)': {
    async acquire(i, c) {
      const r = await c.inner.acquire(i);
      return r.kind === 'found' ? { ...r, record: { ...r.record, fingerprint: i.fingerprint } } : r;
    },
  },
  'fingerprint mismatch not reported on completed records only': {
    async acquire(i, c) {
      const r = await c.inner.acquire(i);
      return r.kind === 'found' && r.record.status === 'completed'
        ? { ...r, record: { ...r.record, fingerprint: i.fingerprint } }
        : r;
    },
  },
  'redelivered acquire by the same owner gets a new fence': {
    async acquire(i, c) {
      const r = await c.inner.get(i.key);
      if (r?.status === 'in_progress' && r.owner === i.owner) {
        await c.inner.admin?.forceRelease(i.key);
        return c.inner.acquire(i);
      }
      return c.inner.acquire(i);
    },
  },
  'complete redelivery with different bytes accepted': {
    async complete(i, c) {
      const r = await c.inner.get(i.key);
      if (r?.status === 'completed' && r.owner === i.owner) return { ok: true };
      return c.inner.complete(i);
    },
  },
  'complete by the owner of a released tombstone accepted': {
    async complete(i, c) {
      const r = await c.inner.get(i.key);
      if (r?.status === 'released' && r.owner === i.owner) {
        const again = await c.inner.acquire({
          key: i.key,
          owner: i.owner,
          fingerprint: r.fingerprint,
          leaseMs: 1_000,
          retentionMs: i.retentionMs,
        });
        if (again.kind === 'acquired')
          c.fenceOffset.set(i.key, (c.fenceOffset.get(i.key) ?? 0) + 1);
      }
      return c.inner.complete(i);
    },
  },
  'extend by the owner of a released tombstone revives its lease': {
    async extend(i, c) {
      const r = await c.inner.get(i.key);
      if (r?.status === 'released' && r.owner === i.owner) {
        const again = await c.inner.acquire({
          key: i.key,
          owner: i.owner,
          fingerprint: r.fingerprint,
          leaseMs: i.leaseMs,
          retentionMs: i.retentionMs,
        });
        if (again.kind === 'acquired') {
          c.fenceOffset.set(i.key, (c.fenceOffset.get(i.key) ?? 0) + 1);
          return { ok: true, leaseUntil: again.leaseUntil };
        }
      }
      return c.inner.extend(i);
    },
  },
  'clock ignored (leases and retention never expire)': {
    innerClock(clock) {
      const frozen = clock.now();
      return { now: () => frozen };
    },
  },
  'get answers expired records': {
    async get(key, c) {
      const r = await c.inner.get(key);
      if (r) c.state.set(`seen:${key}`, r);
      return r ?? (c.state.get(`seen:${key}`) as StoredRecord | undefined);
    },
  },
  'capabilities lie: declares 8 MiB, refuses above 1 MiB': {
    maxOutcomeBytes: 1024 * 1024,
    declaredMaxOutcomeBytes: 8 * 1024 * 1024,
  },
  'capabilities lie: declares no limit, refuses above 4 MiB + 64 KiB': {
    maxOutcomeBytes: 4 * 1024 * 1024 + 64 * 1024,
    declaredMaxOutcomeBytes: undefined,
  },
  'capabilities lie: declares 1 MiB, accepts 8 MiB': {
    maxOutcomeBytes: 8 * 1024 * 1024,
    declaredMaxOutcomeBytes: 1024 * 1024,
  },
  'bounded store drops completed records inside retention (keeps the 2 newest)': {
    async complete(i, c) {
      const r = await c.inner.complete(i);
      if (r.ok) {
        const done = ((c.state.get('done') as string[] | undefined) ?? []).filter(
          (k) => k !== i.key,
        );
        done.push(i.key);
        while (done.length > 2) await c.inner.admin?.delete(done.shift()!);
        c.state.set('done', done);
      }
      return r;
    },
  },
  'release with a due retention deadline leaves the key unreadable (Redis before rev20)':
    unreadableAfterDueWrite('release'),
  'extend with a due deadline leaves the key unreadable (Redis before rev20)':
    unreadableAfterDueWrite('extend'),
  'redelivered acquire with a due deadline leaves the key unreadable (Redis before rev20)':
    unreadableAfterDueWrite('redelivered acquire'),
  'complete with a due retention deadline leaves the key unreadable':
    unreadableAfterDueWrite('complete'),
  // A due release that drops the record and its fence with it (a store that writes its fence
  // memory only for a record that outlives the write): the next acquisition starts again.
  'fence reset after a release with a due retention deadline': {
    async release(i, c) {
      const r = await c.inner.release(i);
      if (r.ok && i.retentionMs <= 1) c.state.set(`due:${i.key}`, true);
      return r;
    },
    // Map.delete answers whether the key was marked: the one acquisition after it resets.
    acquire: fenceAfter((_before, c, key) => c.state.delete(`due:${key}`)),
  },
};
