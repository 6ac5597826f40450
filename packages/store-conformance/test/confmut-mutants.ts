// confmut: more broken variants of the memory store (one MUST each), beside confrev's.
import type { AcquireInput, AcquireResult, StoreAdmin, StoredRecord } from '@idem/core';
import type { Overrides, VariantCtx } from './confrev-variants.js';

const shownFence = (c: VariantCtx, key: string, inner: number) =>
  inner - (c.fenceOffset.get(key) ?? 0);

/** Deletes the key's record and acquires it for `input`, showing the fence `fence`. */
async function reacquire(c: VariantCtx, input: AcquireInput, fence: number) {
  await c.inner.admin?.delete(input.key);
  const r = await c.inner.acquire(input);
  if (r.kind === 'acquired') c.fenceOffset.set(input.key, r.fence - fence);
  return r;
}

const owned = (key: string, owner: string) => `owned:${key}:${owner}`;

/** Acquire that remembers every owner that held a key, and its fingerprint. */
async function rememberingAcquire(i: AcquireInput, c: VariantCtx): Promise<AcquireResult> {
  const r = await c.inner.acquire(i);
  if (r.kind === 'acquired') c.state.set(owned(i.key, i.owner), i.fingerprint);
  return r;
}

/**
 * The store writes every deadline by the clock it must use but judges them by a clock `skew`
 * ms off it (a client's clock where the store's is required): the inner store runs on the
 * skewed clock and is handed every duration less the skew, so what it writes is right.
 */
function judgedBySkewedClock(skew: number): Overrides {
  const less = (ms: number) => Math.max(0, ms - skew);
  return {
    innerClock: (clock) => ({ now: () => clock.now() + skew }),
    acquire: (i, c) => c.inner.acquire({ ...i, leaseMs: less(i.leaseMs) }),
    complete: (i, c) => c.inner.complete({ ...i, retentionMs: less(i.retentionMs) }),
    release: (i, c) => c.inner.release({ ...i, retentionMs: less(i.retentionMs) }),
    extend: (i, c) => c.inner.extend({ ...i, leaseMs: less(i.leaseMs) }),
    now: (now) => now - skew,
    view: (_key, r) => (r.status === 'released' ? { ...r, leaseUntil: r.leaseUntil - skew } : r),
  };
}

const TTL = 'ttl:';

/**
 * A store whose backend deletes an in-progress record at a deadline of its own (a TTL the
 * adapter sets beside the record), `deadline(input, now)` set at acquire and, unless
 * `keptByExtend`, moved by extend; the record's own fields are right. Complete and release
 * set the deadline their record says.
 */
function backendTtl(
  atAcquire: (i: AcquireInput, now: number) => number,
  keptByExtend: boolean,
): Overrides {
  const expire = async (c: VariantCtx, key: string) => {
    const at = c.state.get(TTL + key) as number | undefined;
    if (at === undefined || c.clock.now() < at) return;
    c.state.delete(TTL + key);
    const r = await c.inner.get(key);
    if (r?.status === 'in_progress') await c.inner.admin?.delete(key);
  };
  return {
    async acquire(i, c) {
      await expire(c, i.key);
      const r = await c.inner.acquire(i);
      if (r.kind === 'acquired') c.state.set(TTL + i.key, atAcquire(i, c.clock.now()));
      return r;
    },
    async complete(i, c) {
      await expire(c, i.key);
      const r = await c.inner.complete(i);
      if (r.ok) c.state.delete(TTL + i.key);
      return r;
    },
    async release(i, c) {
      await expire(c, i.key);
      const r = await c.inner.release(i);
      if (r.ok) c.state.delete(TTL + i.key);
      return r;
    },
    async extend(i, c) {
      await expire(c, i.key);
      const r = await c.inner.extend(i);
      if (r.ok && !keptByExtend)
        c.state.set(TTL + i.key, c.clock.now() + i.leaseMs + i.retentionMs);
      return r;
    },
    async get(key, c) {
      await expire(c, key);
      return c.inner.get(key);
    },
  };
}

/** A read that answers `found` for a free record of another fingerprint. */
function foundOnOtherFingerprint(
  when: (r: StoredRecord, i: AcquireInput, now: number) => boolean,
): Overrides {
  return {
    async acquire(i, c) {
      const r = await c.inner.get(i.key);
      const now = c.clock.now();
      if (r && r.fingerprint !== i.fingerprint && when(r, i, now))
        return { kind: 'found', record: r, now };
      return c.inner.acquire(i);
    },
  };
}

/**
 * An extend by an owner that once held the key, when `when` says so of the record it finds
 * (none: expired), takes the record back for that owner (its fence shown unchanged) and answers
 * ok: a heartbeat that revives what its execution lost.
 */
function extendRevives(when: (r: StoredRecord | undefined, owner: string) => boolean): Overrides {
  return {
    acquire: rememberingAcquire,
    async extend(i, c) {
      const r = await c.inner.get(i.key);
      const fingerprint = c.state.get(owned(i.key, i.owner)) as string | undefined;
      if (fingerprint !== undefined && when(r, i.owner)) {
        const input = { ...i, fingerprint };
        const again = r
          ? await reacquire(c, input, shownFence(c, i.key, r.fence))
          : await c.inner.acquire(input);
        if (again.kind === 'acquired') return { ok: true, leaseUntil: again.leaseUntil };
      }
      return c.inner.extend(i);
    },
  };
}

const trimZeros = (b: Uint8Array) => {
  let end = b.length;
  while (end > 0 && b[end - 1] === 0) end--;
  return b.slice(0, end);
};

const adminOf = (c: VariantCtx) => c.inner.admin as StoreAdmin;

/** delexp: an admin delete that does not hold the record to the operator's expectation. */
export const delexpVariants: Record<string, Overrides> = {
  'admin delete ignores the expectation (deletes whatever the key holds)': {
    delete: (key, _expected, c) => adminOf(c).delete(key),
  },
  'admin delete compares the owner and fence expected, not the status': {
    delete: (key, expected, c) => {
      const { status: _, ...rest } = expected ?? {};
      return adminOf(c).delete(key, expected && rest);
    },
  },
  'admin delete checks the expectation on a read of its own, then deletes in a second step': {
    async delete(key, expected, c) {
      const admin = adminOf(c);
      const seen = await admin.inspect(key);
      if (seen && expected) {
        const { status, owner, fence } = seen;
        const differs =
          (expected.status !== undefined && expected.status !== status) ||
          (expected.owner !== undefined && expected.owner !== owner) ||
          (expected.fence !== undefined && expected.fence !== fence);
        if (differs) return { deleted: false, reason: 'changed', status, owner, fence };
      }
      await new Promise((resolve) => setTimeout(resolve, 1));
      return admin.delete(key);
    },
  },
};

export const confmutVariants: Record<string, Overrides> = {
  'extend by the owner of a completed record reopens it': extendRevives(
    (r, owner) => r?.status === 'completed' && r.owner === owner,
  ),
  'extend by an owner whose lease was taken over takes the record back': extendRevives(
    (r, owner) => r?.status === 'in_progress' && r.owner !== owner,
  ),
  'extend by the owner of an expired record revives it': extendRevives((r) => r === undefined),
  'extend by the owner of a force-released record revives it': extendRevives(
    (r, owner) => r?.status === 'released' && r.owner !== owner,
  ),
  'leases judged by a clock 1 s ahead of the store clock': judgedBySkewedClock(1_000),
  'leases judged by a clock 1 s behind the store clock': judgedBySkewedClock(-1_000),
  'completed record taken over once its lease passed (retention ignored)': {
    async acquire(i, c) {
      const r = await c.inner.get(i.key);
      if (r?.status === 'completed' && r.owner !== i.owner && c.clock.now() >= r.leaseUntil) {
        const taken = await reacquire(c, i, shownFence(c, i.key, r.fence) + 1);
        return taken.kind === 'acquired' ? { ...taken, takeover: true } : taken;
      }
      return c.inner.acquire(i);
    },
  },
  'in-progress record deleted at acquire + retention (backend TTL without the lease)': backendTtl(
    (i, now) => now + i.retentionMs,
    false,
  ),
  'in-progress record deleted at acquire + retention + 1 s (backend TTL in whole seconds, without the lease)':
    backendTtl((i, now) => now + i.retentionMs + 1_000, false),
  'extend leaves the backend TTL where acquire put it': backendTtl(
    (i, now) => now + i.leaseMs + i.retentionMs,
    true,
  ),
  'released tombstone answered found to another fingerprint': foundOnOtherFingerprint(
    (r) => r.status === 'released',
  ),
  'passed lease answered found to another fingerprint (no takeover)': foundOnOtherFingerprint(
    (r, _i, now) => r.status === 'in_progress' && now >= r.leaseUntil,
  ),
  'trailing zero bytes of an outcome dropped (blocks padded with zeros)': {
    view: (_key, r) => (r.outcome ? { ...r, outcome: trimZeros(r.outcome) } : r),
  },
  'storage keys cut to their first 48 characters': { innerKey: (k) => k.slice(0, 48) },
  'storage keys cut to their last 48 characters': { innerKey: (k) => k.slice(-48) },
  'retention of a completed record counted from the lease end, not the completion': {
    async complete(i, c) {
      const r = await c.inner.get(i.key);
      const late = r?.status === 'in_progress' ? Math.max(0, r.leaseUntil - c.clock.now()) : 0;
      return c.inner.complete({ ...i, retentionMs: i.retentionMs + late });
    },
  },
  'complete on a completed record overwrites it (any owner)': {
    async complete(i, c) {
      const r = await c.inner.get(i.key);
      if (r?.status === 'completed') {
        const fence = shownFence(c, i.key, r.fence);
        const again = await reacquire(
          c,
          { ...i, fingerprint: r.fingerprint, leaseMs: 1_000 },
          fence,
        );
        if (again.kind === 'acquired') return c.inner.complete(i);
      }
      return c.inner.complete(i);
    },
  },
  'outcome decoded as UTF-8 text on the get path': {
    async get(key, c) {
      const r = await c.inner.get(key);
      if (!r?.outcome) return r;
      return { ...r, outcome: new TextEncoder().encode(new TextDecoder().decode(r.outcome)) };
    },
  },
  'get truncates outcomes of 1 MiB or more by one byte': {
    async get(key, c) {
      const r = await c.inner.get(key);
      if (!r?.outcome || r.outcome.length < 1024 * 1024) return r;
      return { ...r, outcome: r.outcome.slice(0, -1) };
    },
  },
  'capabilities lie: declares 16 MiB, refuses above 10 MiB': {
    maxOutcomeBytes: 10 * 1024 * 1024,
    declaredMaxOutcomeBytes: 16 * 1024 * 1024,
  },
  'release keeps the tombstone for the lease, not the retention': {
    release: (i, c) => c.inner.release({ ...i, retentionMs: 0 }),
  },
};
