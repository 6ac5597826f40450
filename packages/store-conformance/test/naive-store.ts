import {
  type AcquireResult,
  type Clock,
  type IdempotencyStore,
  InvalidInputError,
  type OwnerWriteResult,
  type StoreClock,
  type StoredRecord,
  systemClock,
} from '@idem/core';

/** Bugs the suite must catch; each one is a mistake seen in real idempotency libraries. */
export type Bug =
  | 'none'
  | 'unbounded-strings'
  | 'fractional-deadlines'
  | 'fractional-redelivery'
  | 'code-point-limit'
  | 'complete-ignores-owner'
  | 'release-ignores-owner'
  | 'check-then-set-acquire'
  | 'release-forgets-fence'
  | 'no-expiry-check'
  | 'takeover-keeps-fence'
  | 'binary-as-text'
  | 'found-without-clock'
  | 'in-progress-expires-with-lease'
  | 'acquire-redelivery-found'
  | 'acquire-redelivery-new-fence'
  | 'acquire-redelivery-keeps-lease'
  | 'complete-redelivery-refused'
  | 'complete-redelivery-overwrites'
  | 'complete-redelivery-ignores-owner'
  | 'force-release-keeps-fence'
  | 'force-release-keeps-owner'
  | 'force-release-destroys-completed'
  | 'force-release-ignores-expectation'
  | 'delete-keeps-record'
  | 'delete-forgets-fence'
  | 'delete-ignores-expectation'
  | 'wrong-clock-capability'
  | 'takeover-new-origin'
  | 'release-new-origin'
  | 'origin-outlives-retention';

const yieldToOthers = () => new Promise<void>((resolve) => setTimeout(resolve, 0));

/**
 * A deliberately small in-memory store written independently of @idem/store-memory, with
 * one optional bug. With `bug: 'none'` it must pass the whole suite; with any bug the
 * suite must fail.
 */
export function createNaiveStore(
  bug: Bug,
  given: Clock = systemClock,
  kind: StoreClock = 'injectable',
): IdempotencyStore {
  // Read in whole ms, rounded down (as `readClock` of core's adapter kit and Date.now do): a
  // clock with a fraction must not make a deadline fractional (edge33).
  const clock: Clock = { now: () => Math.floor(given.now()) };
  const map = new Map<string, StoredRecord>();
  // Store contract, "Bad input": whole-ms deadlines; keys and owners of at most 1024 units.
  const whole = (ms: number) => (bug === 'fractional-deadlines' ? ms : Math.ceil(ms));
  const bounded = (input: { key: string; owner: string }) => {
    if (bug === 'unbounded-strings') return;
    if (bug === 'code-point-limit') {
      // 4096 characters (code points), not code units: 2049 astral characters pass.
      if ([...input.key].length > 4096 || [...input.owner].length > 4096)
        throw new InvalidInputError('A storage key or owner must be at most 4096 characters');
      return;
    }
    if (input.key.length > 1024 || input.owner.length > 1024)
      throw new InvalidInputError('A storage key or owner must be at most 1024 characters');
  };
  // Fences of expired records, so a key's fence keeps growing after expiry.
  const lastFence = new Map<string, number>();
  // Only for the 'origin-outlives-retention' bug: origins kept past their record.
  const lastOrigin = new Map<string, string>();
  const notOwner: OwnerWriteResult = { ok: false, reason: 'not_owner' };
  const copy = (r: StoredRecord): StoredRecord => ({
    ...r,
    ...(r.outcome ? { outcome: r.outcome.slice() } : {}),
  });
  const read = (key: string, now: number): StoredRecord | undefined => {
    const r = map.get(key);
    if (r && bug !== 'no-expiry-check' && now >= r.expiresAt) {
      map.delete(key);
      lastFence.set(key, r.fence);
      return undefined;
    }
    return r;
  };
  const owned = (key: string, owner: string, now: number, ignoreOwner = false) => {
    const r = read(key, now);
    return r && r.status === 'in_progress' && (ignoreOwner || r.owner === owner) ? r : undefined;
  };
  return {
    capabilities: {
      clock:
        bug === 'wrong-clock-capability' ? (kind === 'server' ? 'injectable' : 'server') : kind,
    },
    admin: {
      async inspect(key) {
        const now = clock.now();
        const r = read(key, now);
        if (!r) return undefined;
        const { outcome, origin: _origin, ...rest } = r;
        return { ...rest, outcomeBytes: outcome?.length ?? 0, now };
      },
      async forceRelease(key, expected) {
        const r = read(key, clock.now());
        if (!r) return { ok: false, reason: 'not_found' };
        if (r.status !== 'in_progress' && bug !== 'force-release-destroys-completed')
          return { ok: false, reason: 'not_in_progress' };
        const other =
          (expected?.owner !== undefined && expected.owner !== r.owner) ||
          (expected?.fence !== undefined && expected.fence !== r.fence);
        if (other && bug !== 'force-release-ignores-expectation')
          return { ok: false, reason: 'changed', owner: r.owner, fence: r.fence };
        const previousOwner = r.owner;
        delete r.outcome;
        r.status = 'released';
        r.leaseUntil = clock.now();
        if (bug !== 'force-release-keeps-fence') r.fence += 1;
        if (bug !== 'force-release-keeps-owner') r.owner = `admin-${Math.random()}`;
        return { ok: true, fence: r.fence, previousOwner };
      },
      async delete(key, expected) {
        const r = read(key, clock.now());
        const other =
          r !== undefined &&
          ((expected?.status !== undefined && expected.status !== r.status) ||
            (expected?.owner !== undefined && expected.owner !== r.owner) ||
            (expected?.fence !== undefined && expected.fence !== r.fence));
        if (other && bug !== 'delete-ignores-expectation') {
          const { status, owner, fence } = r;
          return { deleted: false, reason: 'changed', status, owner, fence };
        }
        if (r && bug !== 'delete-keeps-record') {
          map.delete(key);
          if (bug === 'delete-forgets-fence') lastFence.delete(key);
          else lastFence.set(key, r.fence);
        }
        return { deleted: r !== undefined };
      },
    },
    async acquire(input): Promise<AcquireResult> {
      bounded(input);
      let now = clock.now();
      const found = read(input.key, now);
      const live = (r: StoredRecord | undefined) =>
        r !== undefined &&
        ((r.status === 'in_progress' && (bug === 'no-expiry-check' || now < r.leaseUntil)) ||
          (r.status === 'completed' && (bug === 'no-expiry-check' || now < r.expiresAt)));
      const mine = found?.status === 'in_progress' && found.owner === input.owner;
      if (mine && bug !== 'acquire-redelivery-new-fence' && bug !== 'acquire-redelivery-found') {
        // A redelivered acquire: the caller's own acquisition, lease renewed, fence kept.
        if (bug !== 'acquire-redelivery-keeps-lease') {
          // 'fractional-redelivery': rounds a first acquire's durations, not a redelivered one's.
          const renew = bug === 'fractional-redelivery' ? (ms: number) => ms : whole;
          found.leaseUntil = now + renew(input.leaseMs);
          found.expiresAt = Math.max(found.expiresAt, found.leaseUntil + renew(input.retentionMs));
        }
        return {
          kind: 'acquired',
          fence: found.fence,
          leaseUntil: found.leaseUntil,
          takeover: false,
          origin: found.origin ?? found.owner,
        };
      }
      if (live(found))
        return {
          kind: 'found',
          record: copy(found!),
          now: bug === 'found-without-clock' ? 0 : now,
        };
      if (bug === 'check-then-set-acquire') {
        await yieldToOthers();
        now = clock.now();
      }
      const previous = found?.fence ?? lastFence.get(input.key) ?? 0;
      const fence =
        bug === 'takeover-keeps-fence' && found?.status === 'in_progress' ? previous : previous + 1;
      const leaseUntil = now + whole(input.leaseMs);
      const expiresAt =
        bug === 'in-progress-expires-with-lease'
          ? leaseUntil
          : leaseUntil + whole(input.retentionMs);
      // The logical request: a live record's is carried on, a free key begins one.
      const carried = found ? (found.origin ?? found.owner) : lastOrigin.get(input.key);
      const fresh =
        carried === undefined ||
        (bug === 'takeover-new-origin' && found?.status === 'in_progress') ||
        (bug === 'release-new-origin' && found?.status === 'released') ||
        (bug !== 'origin-outlives-retention' && !found);
      const origin = fresh ? input.owner : carried;
      map.set(input.key, {
        status: 'in_progress',
        fingerprint: input.fingerprint,
        owner: input.owner,
        origin,
        fence,
        leaseUntil,
        expiresAt,
      });
      if (bug === 'origin-outlives-retention') lastOrigin.set(input.key, origin);
      const takeover = found?.status === 'in_progress';
      return { kind: 'acquired', fence, leaseUntil, takeover, origin };
    },
    async complete(input) {
      bounded(input);
      const now = clock.now();
      const done = read(input.key, now);
      if (done?.status === 'completed' && bug !== 'complete-redelivery-refused') {
        const sameOwner = done.owner === input.owner || bug === 'complete-redelivery-ignores-owner';
        const sameBytes = Buffer.from(done.outcome ?? []).equals(Buffer.from(input.outcome));
        if (sameOwner && bug === 'complete-redelivery-overwrites') {
          done.outcome = input.outcome.slice();
          return { ok: true };
        }
        if (sameOwner && sameBytes) return { ok: true };
      }
      const r = owned(input.key, input.owner, now, bug === 'complete-ignores-owner');
      if (!r) return notOwner;
      r.status = 'completed';
      r.expiresAt = now + whole(input.retentionMs);
      r.outcome =
        bug === 'binary-as-text'
          ? new TextEncoder().encode(new TextDecoder().decode(input.outcome))
          : input.outcome.slice();
      return { ok: true };
    },
    async release(input) {
      bounded(input);
      const now = clock.now();
      const r = owned(input.key, input.owner, now, bug === 'release-ignores-owner');
      if (!r) return notOwner;
      if (bug === 'release-forgets-fence') {
        map.delete(input.key);
        lastFence.delete(input.key);
        return { ok: true };
      }
      r.status = 'released';
      r.expiresAt = now + whole(input.retentionMs);
      return { ok: true };
    },
    async extend(input) {
      bounded(input);
      const now = clock.now();
      const r = owned(input.key, input.owner, now);
      if (!r) return notOwner;
      r.leaseUntil = now + whole(input.leaseMs);
      r.expiresAt = r.leaseUntil + whole(input.retentionMs);
      return { ok: true, leaseUntil: r.leaseUntil };
    },
    async get(key) {
      const r = read(key, clock.now());
      return r && copy(r);
    },
  };
}
