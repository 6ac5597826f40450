import { elapsedClock } from '../../src/clock.js';
import {
  type AcquireInput,
  type AcquireResult,
  type Clock,
  type CompleteInput,
  type ExtendInput,
  type IdempotencyStore,
  OutcomeTooLargeError,
  type OwnerWriteResult,
  type ReleaseInput,
  type StoredRecord,
  StoreFullError,
  systemClock,
} from '../../src/index.js';

/** What one store call does instead of (or besides) its work. */
export type Fault =
  | 'throw' // fails before reaching the store
  | 'lost' // applied, then the answer is lost (an error)
  | 'hang' // never answers, never applied
  | 'hang_after' // applied, never answers
  | 'late' // applied and answered after `lateMs` (past a caller's time limit)
  | 'too_large'
  | 'full';

export type Op = 'acquire' | 'complete' | 'release' | 'extend';

/**
 * A small contract-abiding store for core's own tests (core cannot depend on a store
 * package), with faults that tests queue per operation: `next.complete.push('throw')` fails
 * the next complete, `always.extend = 'throw'` fails every extend until cleared.
 */
export class FakeStore implements IdempotencyStore {
  readonly capabilities: IdempotencyStore['capabilities'];
  readonly records = new Map<string, StoredRecord>();
  readonly next: Record<Op, Fault[]> = { acquire: [], complete: [], release: [], extend: [] };
  readonly always: Partial<Record<Op, Fault>> = {};
  readonly calls: Record<Op, number> = { acquire: 0, complete: 0, release: 0, extend: 0 };
  /** Calls made and not answered yet (a `hang` stays in flight), and the most at once. */
  readonly inFlight: Record<Op, number> = { acquire: 0, complete: 0, release: 0, extend: 0 };
  readonly maxInFlight: Record<Op, number> = { acquire: 0, complete: 0, release: 0, extend: 0 };
  /** How long a `late` call waits before it is applied. */
  lateMs = 100;
  /** Per-call waits for the next `late` calls (`lateMs` once used up). */
  readonly nextLateMs: Record<Op, number[]> = {
    acquire: [],
    complete: [],
    release: [],
    extend: [],
  };

  /**
   * The clock that decides expiry: as `@idem/store-memory` does, the default (`systemClock`)
   * counts on a monotonic clock (a wall clock stepped forward must not hand a key over while
   * the engine's keeper, counting elapsed time, still holds it); an injected one as given.
   */
  private readonly clock: Clock;

  constructor(clock: Clock = systemClock, maxOutcomeBytes?: number) {
    this.clock = elapsedClock(clock);
    this.capabilities = {
      clock: 'injectable',
      ...(maxOutcomeBytes === undefined ? {} : { maxOutcomeBytes }),
    };
  }

  private run<T>(op: Op, apply: () => T): Promise<T> {
    this.inFlight[op]++;
    this.maxInFlight[op] = Math.max(this.maxInFlight[op], this.inFlight[op]);
    const call = this.perform(op, apply);
    const answered = () => {
      this.inFlight[op]--;
    };
    call.then(answered, answered);
    return call;
  }

  private async perform<T>(op: Op, apply: () => T): Promise<T> {
    this.calls[op]++;
    const fault = this.next[op].shift() ?? this.always[op];
    if (fault === 'throw') throw new Error(`${op} failed (injected)`);
    if (fault === 'hang') return new Promise<T>(() => {});
    if (fault === 'too_large') throw new OutcomeTooLargeError(1, 0);
    if (fault === 'full') throw new StoreFullError('full (injected)');
    if (fault === 'late') {
      const ms = this.nextLateMs[op].shift() ?? this.lateMs;
      await new Promise((resolve) => setTimeout(resolve, ms));
    }
    const result = apply();
    if (fault === 'lost') throw new Error(`${op} applied, answer lost (injected)`);
    if (fault === 'hang_after') return new Promise<T>(() => {});
    return result;
  }

  private live(key: string): StoredRecord | undefined {
    const r = this.records.get(key);
    return r && this.clock.now() < r.expiresAt ? r : undefined;
  }

  private owned(key: string, owner: string): StoredRecord | undefined {
    const r = this.live(key);
    return r?.status === 'in_progress' && r.owner === owner ? r : undefined;
  }

  acquire(input: AcquireInput): Promise<AcquireResult> {
    return this.run('acquire', () => this.acquireSync(input));
  }

  /** The acquire applied at once (no fault, not counted): for a synchronous form in a test. */
  acquireSync(input: AcquireInput): AcquireResult {
    const now = this.clock.now();
    const found = this.live(input.key);
    const leaseUntil = now + input.leaseMs;
    if (found?.status === 'in_progress' && found.owner === input.owner) {
      // A redelivered acquire: the caller's own acquisition, renewed.
      found.leaseUntil = leaseUntil;
      found.expiresAt = Math.max(found.expiresAt, leaseUntil + input.retentionMs);
      const origin = found.origin ?? found.owner;
      return { kind: 'acquired', fence: found.fence, leaseUntil, takeover: false, origin };
    }
    if (
      (found?.status === 'in_progress' && now < found.leaseUntil) ||
      found?.status === 'completed'
    ) {
      return { kind: 'found', record: { ...found }, now };
    }
    const fence = (this.records.get(input.key)?.fence ?? 0) + 1;
    // A live record's logical request goes on; a free key begins one.
    const origin = found ? (found.origin ?? found.owner) : input.owner;
    this.records.set(input.key, {
      status: 'in_progress',
      fingerprint: input.fingerprint,
      owner: input.owner,
      origin,
      fence,
      leaseUntil,
      expiresAt: leaseUntil + input.retentionMs,
    });
    const takeover = found?.status === 'in_progress';
    return { kind: 'acquired', fence, leaseUntil, takeover, origin };
  }

  complete(input: CompleteInput): Promise<OwnerWriteResult> {
    return this.run('complete', () => {
      const limit = this.capabilities.maxOutcomeBytes;
      if (limit !== undefined && input.outcome.length > limit)
        throw new OutcomeTooLargeError(input.outcome.length, limit);
      const done = this.live(input.key);
      if (
        done?.status === 'completed' &&
        done.owner === input.owner &&
        Buffer.from(done.outcome ?? []).equals(Buffer.from(input.outcome))
      ) {
        return { ok: true } as const; // a redelivered complete
      }
      const r = this.owned(input.key, input.owner);
      if (!r) return { ok: false, reason: 'not_owner' } as const;
      r.status = 'completed';
      r.outcome = input.outcome.slice();
      r.expiresAt = this.clock.now() + input.retentionMs;
      return { ok: true } as const;
    });
  }

  release(input: ReleaseInput): Promise<OwnerWriteResult> {
    return this.run('release', () => {
      const r = this.owned(input.key, input.owner);
      if (!r) return { ok: false, reason: 'not_owner' } as const;
      r.status = 'released';
      r.expiresAt = this.clock.now() + input.retentionMs;
      return { ok: true } as const;
    });
  }

  extend(input: ExtendInput): Promise<OwnerWriteResult> {
    return this.run('extend', () => {
      const r = this.owned(input.key, input.owner);
      if (!r) return { ok: false, reason: 'not_owner' } as const;
      r.leaseUntil = this.clock.now() + input.leaseMs;
      r.expiresAt = Math.max(r.expiresAt, r.leaseUntil + input.retentionMs);
      return { ok: true, leaseUntil: r.leaseUntil } as const;
    });
  }

  async get(key: string): Promise<StoredRecord | undefined> {
    const r = this.live(key);
    return r && { ...r };
  }

  /** Takes a key over as another executor would after the lease passed. */
  steal(key: string): void {
    const r = this.records.get(key);
    if (r) Object.assign(r, { owner: 'thief', fence: r.fence + 1 });
  }
}
