import {
  type AcquireInput,
  type AcquireResult,
  type Clock,
  type CompleteInput,
  type ExtendInput,
  type IdempotencyStore,
  InvalidInputError,
  OutcomeTooLargeError,
  type OwnerWriteResult,
  type ReleaseInput,
  type StoreCapabilities,
  type StoredRecord,
  StoreFullError,
  systemClock,
} from '@idem/core';

/** Options of {@link createMemoryStore}. */
export interface MemoryStoreOptions {
  /** Clock that decides expiry. @default systemClock */
  clock?: Clock;
  /**
   * Most records kept. When full, expired records go first, then completed and released
   * ones (oldest first), then in-progress records whose lease has passed. Live leases are
   * never dropped: an acquire that would need to drop one fails with `StoreFullError`.
   * @default 100_000
   */
  maxEntries?: number;
  /** Interval of the sweep that frees expired records, in ms; `0` disables it. @default 60_000 */
  sweepIntervalMs?: number;
  /** Largest encoded outcome accepted, in bytes. @default undefined (no limit) */
  maxOutcomeBytes?: number;
}

/** An in-process store; see {@link createMemoryStore}. */
export interface MemoryStore extends IdempotencyStore {
  /** Number of records held, expired ones not yet swept included. */
  readonly size: number;
  /** Removes expired records now; returns how many. */
  sweep(): number;
  /** Stops the sweep timer. The store keeps working for calls made after. */
  close(): Promise<void>;
}

function clone(record: StoredRecord): StoredRecord {
  const copy: StoredRecord = { ...record };
  if (record.outcome) copy.outcome = record.outcome.slice();
  return copy;
}

/**
 * Creates a store that keeps records in this process's memory: the embedded default for
 * one server, development and tests. Every operation is synchronous inside, hence atomic
 * with respect to every other call. Nothing is shared between processes.
 */
export function createMemoryStore(options: MemoryStoreOptions = {}): MemoryStore {
  const clock = options.clock ?? systemClock;
  const maxEntries = options.maxEntries ?? 100_000;
  if (!(Number.isSafeInteger(maxEntries) && maxEntries > 0)) {
    throw new InvalidInputError('maxEntries must be a positive integer');
  }
  const records = new Map<string, StoredRecord>();
  // Fences of forgotten records: a new record starts above every fence ever dropped, so a
  // key's fence keeps growing across expiry and eviction too.
  let fenceFloor = 0;
  const capabilities: StoreCapabilities = {
    clock: 'client',
    maxOutcomeBytes: options.maxOutcomeBytes,
  };

  function drop(key: string, record: StoredRecord): void {
    records.delete(key);
    if (record.fence > fenceFloor) fenceFloor = record.fence;
  }

  function live(key: string, now: number): StoredRecord | undefined {
    const record = records.get(key);
    if (record && now >= record.expiresAt) {
      drop(key, record);
      return undefined;
    }
    return record;
  }

  function sweep(): number {
    const now = clock.now();
    let removed = 0;
    for (const [key, record] of records) {
      if (now >= record.expiresAt) {
        drop(key, record);
        removed++;
      }
    }
    return removed;
  }

  function makeRoom(now: number): void {
    if (records.size < maxEntries) return;
    sweep();
    if (records.size < maxEntries) return;
    for (const [key, record] of records) {
      if (record.status !== 'in_progress') {
        drop(key, record);
        return;
      }
    }
    for (const [key, record] of records) {
      if (now >= record.leaseUntil) {
        drop(key, record);
        return;
      }
    }
    throw new StoreFullError(`Memory store is full: ${maxEntries} records, all with live leases`);
  }

  const interval = options.sweepIntervalMs ?? 60_000;
  let timer: ReturnType<typeof setInterval> | undefined;
  if (interval > 0) {
    timer = setInterval(sweep, interval);
    timer.unref?.();
  }

  function ownedInProgress(key: string, owner: string, now: number): StoredRecord | undefined {
    const record = live(key, now);
    return record && record.status === 'in_progress' && record.owner === owner ? record : undefined;
  }

  const notOwner: OwnerWriteResult = { ok: false, reason: 'not_owner' };

  return {
    capabilities,
    get size() {
      return records.size;
    },
    sweep,
    async acquire(input: AcquireInput): Promise<AcquireResult> {
      const now = clock.now();
      const found = live(input.key, now);
      if (found) {
        const isLive =
          (found.status === 'in_progress' && now < found.leaseUntil) ||
          (found.status === 'completed' && now < found.expiresAt);
        if (isLive) return { kind: 'found', record: clone(found), now };
      } else {
        makeRoom(now);
      }
      const leaseUntil = now + input.leaseMs;
      const fence = (found ? found.fence : fenceFloor) + 1;
      records.delete(input.key); // re-insert at the end: eviction order follows last write
      records.set(input.key, {
        status: 'in_progress',
        fingerprint: input.fingerprint,
        owner: input.owner,
        fence,
        leaseUntil,
        expiresAt: leaseUntil + input.retentionMs,
      });
      return { kind: 'acquired', fence, leaseUntil, takeover: found?.status === 'in_progress' };
    },
    async complete(input: CompleteInput): Promise<OwnerWriteResult> {
      const limit = options.maxOutcomeBytes;
      if (limit !== undefined && input.outcome.length > limit) {
        throw new OutcomeTooLargeError(input.outcome.length, limit);
      }
      const now = clock.now();
      const record = ownedInProgress(input.key, input.owner, now);
      if (!record) return notOwner;
      record.status = 'completed';
      record.expiresAt = now + input.retentionMs;
      record.outcome = input.outcome.slice();
      return { ok: true };
    },
    async release(input: ReleaseInput): Promise<OwnerWriteResult> {
      const now = clock.now();
      const record = ownedInProgress(input.key, input.owner, now);
      if (!record) return notOwner;
      record.status = 'released';
      record.leaseUntil = now;
      record.expiresAt = now + input.retentionMs;
      return { ok: true };
    },
    async extend(input: ExtendInput): Promise<OwnerWriteResult> {
      const now = clock.now();
      const record = ownedInProgress(input.key, input.owner, now);
      if (!record) return notOwner;
      record.leaseUntil = now + input.leaseMs;
      record.expiresAt = record.leaseUntil + input.retentionMs;
      return { ok: true, leaseUntil: record.leaseUntil };
    },
    async get(key: string): Promise<StoredRecord | undefined> {
      const record = live(key, clock.now());
      return record ? clone(record) : undefined;
    },
    async close(): Promise<void> {
      if (timer !== undefined) clearInterval(timer);
      timer = undefined;
    },
  };
}
