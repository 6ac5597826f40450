import type { ExtendInput, OwnerWriteResult } from '@idem/core';
import type { BusinessTransaction } from './business-transaction.js';

/** Acquisitions whose operation has not started yet; bounded (a late acquire never runs one). */
const MAX_WAITING = 10_000;
const OK: OwnerWriteResult = { ok: true };
const NOT_OWNER: OwnerWriteResult = { ok: false, reason: 'not_owner' };

const id = (key: string, part: string | number) => `${key}\0${part}`;
const ignore = () => {};

/**
 * One execution of the transactional engine whose operation has started: its business
 * transaction, and the heartbeats of its lease.
 *
 * While the transaction holds the record's row (locked right after `BEGIN`), nobody can
 * take the key over, and a heartbeat that wrote the row would wait for the transaction's
 * end (and, under repeatable read or serializable, make its completion fail with 40001). So
 * heartbeats then renew the record's held lease on the engine's renewal connection (see
 * `BusinessTransaction.heartbeat`), which a takeover honours besides the record's own: "still
 * held" when renewed, "lost" (`not_owner`) when the record is another's or the connection
 * broke, so that the operation's signal aborts, and a failure when the server does not
 * answer (the lease estimate then passes and the signal aborts before any duplicate can take
 * over, however the transaction ended). Before the lock and after the transaction ended,
 * they renew the lease in the store as usual; the lock is only sent when no heartbeat is in
 * flight (one that committed after the transaction's snapshot would fail it).
 */
export class RunningExecution {
  tx: BusinessTransaction | undefined;
  private beat: Promise<unknown> | undefined;
  private locking: Promise<void> | undefined;

  constructor(
    readonly key: string,
    readonly owner: string,
    readonly fence: number,
  ) {}

  /** A heartbeat of this execution; `send` renews the lease in the store. */
  async extend(
    input: ExtendInput,
    send: () => Promise<OwnerWriteResult>,
  ): Promise<OwnerWriteResult> {
    if (this.locking) await this.locking;
    const row = this.tx?.rowState() ?? 'none';
    if (row === 'held' && this.tx) {
      // The held lease, renewed outside the transaction (the record's row is locked).
      const held = await this.tx.heartbeat(input);
      if (held === 'held') return OK;
      if (held === 'lost') return NOT_OWNER;
    } else if (row === 'lost') return NOT_OWNER;
    const sent = send();
    this.beat = sent;
    const settled = () => {
      if (this.beat === sent) this.beat = undefined;
    };
    sent.then(settled, settled);
    return sent;
  }

  /** Runs `lock` once no heartbeat is in flight; heartbeats meanwhile wait for its end. */
  async whileNoHeartbeat(lock: () => Promise<void>): Promise<void> {
    // Each heartbeat is bounded by the store's time limit.
    while (this.beat) await this.beat.then(ignore, ignore);
    const run = lock();
    const locking = run.then(ignore, ignore);
    this.locking = locking;
    try {
      await run;
    } finally {
      if (this.locking === locking) this.locking = undefined;
    }
  }
}

/**
 * The engine's bookkeeping: which owner acquired (storage key, fence), so the operation
 * learns it, and the executions whose operation runs, by owner (the store calls core makes
 * name the owner) and by fence (core's events name the fence). Bounded: acquisitions never
 * claimed go oldest first past 10,000; running ones leave when their transaction ends.
 */
export class ExecutionRegistry {
  private readonly waiting = new Map<string, string>();
  private readonly waitingByOwner = new Map<string, string>();
  private readonly running = new Map<string, RunningExecution>();
  private readonly runningByFence = new Map<string, RunningExecution>();

  /** The store answered `acquired` for `owner`. */
  acquired(key: string, fence: number, owner: string): void {
    if (this.waiting.size >= MAX_WAITING) {
      const [oldest, oldOwner] = this.waiting.entries().next().value as [string, string];
      this.waiting.delete(oldest);
      this.waitingByOwner.delete(id(oldest.split('\0')[0]!, oldOwner));
    }
    this.waiting.set(id(key, fence), owner);
    this.waitingByOwner.set(id(key, owner), id(key, fence));
  }

  /** An acquisition given back before its operation started (core's give-back). */
  dropWaiting(key: string, owner: string): void {
    const fenceId = this.waitingByOwner.get(id(key, owner));
    if (fenceId !== undefined) this.waiting.delete(fenceId);
    this.waitingByOwner.delete(id(key, owner));
  }

  /** The operation of (key, fence) starts: its execution, or undefined if unknown. */
  start(key: string, fence: number): RunningExecution | undefined {
    const owner = this.waiting.get(id(key, fence));
    if (owner === undefined) return undefined;
    this.dropWaiting(key, owner);
    const execution = new RunningExecution(key, owner, fence);
    this.running.set(id(key, owner), execution);
    this.runningByFence.set(id(key, fence), execution);
    return execution;
  }

  byOwner(key: string, owner: string): RunningExecution | undefined {
    return this.running.get(id(key, owner));
  }

  byFence(key: string, fence: number): RunningExecution | undefined {
    return this.runningByFence.get(id(key, fence));
  }

  end(execution: RunningExecution): void {
    if (this.running.get(id(execution.key, execution.owner)) === execution)
      this.running.delete(id(execution.key, execution.owner));
    if (this.runningByFence.get(id(execution.key, execution.fence)) === execution)
      this.runningByFence.delete(id(execution.key, execution.fence));
  }
}
