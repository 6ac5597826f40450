import type {
  AcquireInput,
  AcquireResult,
  Clock,
  CompleteInput,
  ExtendInput,
  IdempotencyStore,
  OwnerWriteResult,
  ReleaseInput,
  StoreCallContext,
  StoredRecord,
} from '@idem/core';

/**
 * What a fault does to one store call: nothing, fail before reaching the store, apply then
 * lose the answer, or apply, lose the answer and deliver the same call again (a client
 * library resending after a reconnect), answering with the second delivery's result.
 */
export type Fault = 'none' | 'fail' | 'lost' | 'redeliver';

/**
 * One acquisition the store granted, seen from outside the executor. A store applies a call
 * somewhere between its send and its answer, so order is judged on those two points:
 * `sendSeq` and `answerSeq` count events in one sequence shared by all calls.
 */
export interface Grant {
  key: string;
  owner: string;
  fence: number;
  leaseUntil: number;
  sendSeq: number;
  answerSeq: number;
  /** Clock reading when the answer came back (the store decided no later). */
  answeredAt: number;
  /** Send sequence of the complete or release by this owner that the store applied. */
  finishSendSeq?: number;
  /** Which write that was. */
  finishKind?: 'complete' | 'release';
}

/**
 * Wraps the store under test: injects faults, lets the scheduler order calls and answers,
 * and watches every grant and owner write to check the invariants that concern the store:
 * (a) no grant while another owner's lease is live, (c) no write by a stale owner, and
 * fences that grow. A store may apply concurrent calls in any order within their windows,
 * so only orders that are certain count as violations.
 */
export class ObservedStore implements IdempotencyStore {
  readonly grants: Grant[] = [];
  /** First applied completion per storage key: the outcome every replay must equal. */
  readonly completions = new Map<string, { owner: string; outcome: Uint8Array }>();
  readonly violations: string[] = [];
  faultsOn = true;
  private faultIndex = 0;
  private seq = 0;

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
    observe: (result: T, sendSeq: number, answerSeq: number) => void,
  ): Promise<T> {
    const fault = this.nextFault();
    if (this.gate) await this.gate(undefined, `${label}:send`);
    if (fault === 'fail')
      throw new Error(`injected fault: ${label} failed before reaching the store`);
    let sendSeq = ++this.seq;
    let result = await fn();
    observe(result, sendSeq, ++this.seq);
    if (fault === 'redeliver') {
      // The first answer is lost; the same call reaches the store a second time.
      sendSeq = ++this.seq;
      result = await fn();
      observe(result, sendSeq, ++this.seq);
    }
    if (fault === 'lost') throw new Error(`injected fault: ${label} applied, answer lost`);
    return this.gate ? this.gate(result, `${label}:answer`) : result;
  }

  private violation(message: string): void {
    this.violations.push(message);
  }

  private grantsOf(key: string): Grant[] {
    return this.grants.filter((g) => g.key === key);
  }

  acquire(input: AcquireInput, context?: StoreCallContext): Promise<AcquireResult> {
    return this.call(
      'acquire',
      () => this.inner.acquire(input, context),
      (result, sendSeq, answerSeq) => {
        if (result.kind !== 'acquired') return;
        const own = this.grantsOf(input.key).find(
          (g) => g.owner === input.owner && g.fence === result.fence,
        );
        if (own) {
          // A redelivered acquire: the same acquisition, its lease renewed.
          own.leaseUntil = Math.max(own.leaseUntil, result.leaseUntil);
          if (own.finishSendSeq !== undefined)
            this.violation(`an acquisition ended by its ${own.finishKind} was granted again`);
          return;
        }
        const grant: Grant = {
          key: input.key,
          owner: input.owner,
          fence: result.fence,
          leaseUntil: result.leaseUntil,
          sendSeq,
          answerSeq,
          answeredAt: this.clock.now(),
        };
        for (const other of this.grantsOf(input.key)) {
          if (other.fence === grant.fence) this.violation(`fence ${grant.fence} granted twice`);
          // Certainly granted before this one was sent: its fence must be lower.
          if (other.answerSeq < sendSeq && other.fence >= grant.fence) {
            this.violation(`fence did not grow: ${other.fence} then ${grant.fence}`);
          }
        }
        this.grants.push(grant);
      },
    );
  }

  /** (c): an owner write was applied although a newer grant was certainly applied before it. */
  private ownerWrite(
    kind: string,
    key: string,
    owner: string,
    result: OwnerWriteResult,
    sendSeq: number,
  ): Grant | undefined {
    if (!result.ok) return undefined;
    const grants = this.grantsOf(key);
    const mine = grants.filter((g) => g.owner === owner).at(-1);
    if (!mine) {
      this.violation(`(c) ${kind} by an owner that never acquired was applied`);
      return undefined;
    }
    if (grants.some((g) => g.fence > mine.fence && g.answerSeq < sendSeq)) {
      this.violation(
        `(c) ${kind} by the stale owner of fence ${mine.fence} was applied on key ${key.slice(0, 8)}`,
      );
    }
    if (kind === 'extend') return mine;
    if (mine.finishSendSeq !== undefined) {
      // A redelivered release may be answered ok (SHOULD); a repeated complete is judged by its caller.
      if (!(kind === 'release' && mine.finishKind === 'release'))
        this.violation(`${kind} applied twice for one acquisition`);
      return mine;
    }
    mine.finishSendSeq = sendSeq;
    mine.finishKind = kind as 'complete' | 'release';
    return mine;
  }

  complete(input: CompleteInput, context?: StoreCallContext): Promise<OwnerWriteResult> {
    return this.call(
      'complete',
      () => this.inner.complete(input, context),
      (result, sendSeq) => {
        const prior = this.completions.get(input.key);
        if (
          result.ok &&
          prior?.owner === input.owner &&
          Buffer.from(prior.outcome).equals(Buffer.from(input.outcome))
        ) {
          return; // a redelivered complete: applied once, answered ok again
        }
        this.ownerWrite('complete', input.key, input.owner, result, sendSeq);
        if (!result.ok) return;
        if (this.completions.has(input.key)) {
          this.violation(`(b) key ${input.key.slice(0, 8)} completed twice within retention`);
        } else {
          this.completions.set(input.key, { owner: input.owner, outcome: input.outcome.slice() });
        }
      },
    );
  }

  release(input: ReleaseInput, context?: StoreCallContext): Promise<OwnerWriteResult> {
    return this.call(
      'release',
      () => this.inner.release(input, context),
      (result, sendSeq) => this.ownerWrite('release', input.key, input.owner, result, sendSeq),
    );
  }

  extend(input: ExtendInput, context?: StoreCallContext): Promise<OwnerWriteResult> {
    return this.call(
      'extend',
      () => this.inner.extend(input, context),
      () => {},
    );
  }

  get(key: string): Promise<StoredRecord | undefined> {
    return this.inner.get(key);
  }

  /**
   * (a), judged once every call has answered: a grant N and an earlier grant O of the same
   * key, where O's lease was still live when N's answer came back and O's owner had not
   * even sent the complete or release that ended it before N was answered.
   */
  leaseViolations(): string[] {
    const problems: string[] = [];
    for (const n of this.grants) {
      for (const o of this.grantsOf(n.key)) {
        if (o.fence >= n.fence) continue;
        const leaseLive = o.leaseUntil > n.answeredAt + this.toleranceMs;
        const notEnded = o.finishSendSeq === undefined || o.finishSendSeq > n.answerSeq;
        if (leaseLive && notEnded) {
          problems.push(
            `(a) key ${n.key.slice(0, 8)} granted to fence ${n.fence} while fence ${o.fence}'s lease was live until ${o.leaseUntil} (answered at ${n.answeredAt})`,
          );
        }
      }
    }
    return problems;
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
