import type {
  AcquireInput,
  AcquireResult,
  Clock,
  CompleteInput,
  ExtendInput,
  IdempotencyStore,
  OwnerWriteResult,
  ReleaseInput,
  StoredRecord,
} from '@idem/core';

/** What a fault does to one store call: nothing, fail before reaching the store, or apply then lose the answer. */
export type Fault = 'none' | 'fail' | 'lost';

/** One acquisition the store granted, seen from outside the executor. */
export interface Grant {
  key: string;
  owner: string;
  fence: number;
  leaseUntil: number;
  /** Whether a complete or release by this owner was applied by the store. */
  finished: boolean;
}

/**
 * Wraps the store under test: injects faults, lets the scheduler order calls and answers,
 * and watches every grant and owner write to check invariants (a) and (c) as they happen.
 */
export class ObservedStore implements IdempotencyStore {
  readonly grants: Grant[] = [];
  /** First applied completion per storage key: the outcome every replay must equal. */
  readonly completions = new Map<string, { owner: string; outcome: Uint8Array }>();
  readonly violations: string[] = [];
  faultsOn = true;
  private faultIndex = 0;

  constructor(
    private readonly inner: IdempotencyStore,
    private readonly clock: Clock,
    private readonly faults: readonly Fault[],
    private readonly toleranceMs: number,
    /** Orders calls and answers (the fast-check scheduler), or runs them straight. */
    public gate: (<T>(value: T, label: string) => Promise<T>) | undefined,
  ) {}

  get capabilities() {
    return this.inner.capabilities;
  }

  private nextFault(): Fault {
    if (!this.faultsOn || this.faults.length === 0) return 'none';
    return this.faults[this.faultIndex++ % this.faults.length] ?? 'none';
  }

  private async call<T>(
    label: string,
    fn: () => Promise<T>,
    observe: (result: T) => void,
  ): Promise<T> {
    const fault = this.nextFault();
    if (this.gate) await this.gate(undefined, `${label}:send`);
    if (fault === 'fail')
      throw new Error(`injected fault: ${label} failed before reaching the store`);
    const result = await fn();
    observe(result);
    if (fault === 'lost') throw new Error(`injected fault: ${label} applied, answer lost`);
    return this.gate ? this.gate(result, `${label}:answer`) : result;
  }

  private violation(message: string): void {
    this.violations.push(message);
  }

  acquire(input: AcquireInput): Promise<AcquireResult> {
    return this.call(
      'acquire',
      () => this.inner.acquire(input),
      (result) => {
        if (result.kind !== 'acquired') return;
        const decidedBy = this.clock.now() + this.toleranceMs;
        const previous = this.grants.filter((g) => g.key === input.key);
        for (const other of previous) {
          // (a): another acquisition whose owner write was never applied still holds its lease.
          if (!other.finished && other.leaseUntil > decidedBy) {
            this.violation(
              `(a) key ${input.key.slice(0, 8)} granted to fence ${result.fence} while fence ${other.fence}'s lease was live until ${other.leaseUntil} (now <= ${decidedBy})`,
            );
          }
          if (other.fence >= result.fence) {
            this.violation(`fence did not grow: ${other.fence} then ${result.fence}`);
          }
        }
        this.grants.push({
          key: input.key,
          owner: input.owner,
          fence: result.fence,
          leaseUntil: result.leaseUntil,
          finished: false,
        });
      },
    );
  }

  private checkOwnerWrite(
    kind: string,
    key: string,
    owner: string,
    result: OwnerWriteResult,
  ): Grant | undefined {
    if (!result.ok) return undefined;
    const grants = this.grants.filter((g) => g.key === key);
    const latest = grants[grants.length - 1];
    const mine = grants.find((g) => g.owner === owner);
    // (c): only the newest owner may write.
    if (!mine || latest !== mine) {
      this.violation(`(c) ${kind} by a stale owner was applied on key ${key.slice(0, 8)}`);
    }
    if (mine?.finished) this.violation(`${kind} applied twice for one acquisition`);
    return mine;
  }

  complete(input: CompleteInput): Promise<OwnerWriteResult> {
    return this.call(
      'complete',
      () => this.inner.complete(input),
      (result) => {
        const grant = this.checkOwnerWrite('complete', input.key, input.owner, result);
        if (!result.ok) return;
        if (grant) grant.finished = true;
        if (this.completions.has(input.key)) {
          this.violation(`(b) key ${input.key.slice(0, 8)} completed twice within retention`);
        } else {
          this.completions.set(input.key, { owner: input.owner, outcome: input.outcome.slice() });
        }
      },
    );
  }

  release(input: ReleaseInput): Promise<OwnerWriteResult> {
    return this.call(
      'release',
      () => this.inner.release(input),
      (result) => {
        const grant = this.checkOwnerWrite('release', input.key, input.owner, result);
        if (grant && result.ok) grant.finished = true;
      },
    );
  }

  extend(input: ExtendInput): Promise<OwnerWriteResult> {
    return this.call(
      'extend',
      () => this.inner.extend(input),
      () => {},
    );
  }

  get(key: string): Promise<StoredRecord | undefined> {
    return this.inner.get(key);
  }
}

/**
 * A downstream resource that checks fencing tokens: one slot per storage key, written only
 * by a fence at least as high as the last accepted one.
 */
export class FencedLedger {
  readonly slots = new Map<string, { fence: number; execution: string }>();
  accepted = 0;
  rejected = 0;

  write(key: string, fence: number, execution: string): boolean {
    const slot = this.slots.get(key);
    if (slot && fence < slot.fence) {
      this.rejected++;
      return false;
    }
    this.slots.set(key, { fence, execution });
    this.accepted++;
    return true;
  }
}
