import type { NotRecordedReason } from './errors.js';
import type { EventSink, ExecutionEndResult } from './events.js';
import type { NotRecordedDetails } from './not-recorded.js';
import { storeCallObserver } from './observe.js';

type Phase = 'heartbeat' | 'complete' | 'release' | 'max_hold';

/**
 * The events of one acquisition, created only when a listener is given (an execution nobody
 * observes has none). `execution_end` is told exactly once, by whichever path ends the
 * acquisition first.
 * @internal
 */
export class ExecutionReport {
  /** `performance.now()` at the acquisition. */
  private readonly acquiredAt = performance.now();
  private ended = false;

  constructor(
    private readonly sink: EventSink,
    private readonly storageKey: string,
    private readonly operation: string | undefined,
    private readonly fence: number,
  ) {}

  /** The `observe` hook of a store call. */
  observer(method: 'complete' | 'release') {
    return storeCallObserver(this.sink, method, this.storageKey, this.operation);
  }

  storeError(method: 'complete' | 'release', error: unknown, durationMs: number): void {
    const { storageKey, operation, fence } = this;
    this.sink.emit({
      type: 'store_error',
      storageKey,
      operation,
      method,
      fence,
      error,
      durationMs,
    });
  }

  released(startedAt: number): void {
    const { storageKey, operation, fence } = this;
    const durationMs = performance.now() - startedAt;
    this.sink.emit({ type: 'released', storageKey, operation, fence, durationMs });
    this.end('released');
  }

  completed(outcomeBytes: number, startedAt: number): void {
    const { storageKey, operation, fence } = this;
    const durationMs = performance.now() - startedAt;
    this.sink.emit({ type: 'completed', storageKey, operation, fence, outcomeBytes, durationMs });
    this.end('completed');
  }

  notRecorded(reason: NotRecordedReason, details: NotRecordedDetails): void {
    const { storageKey, operation, fence } = this;
    this.sink.emit({
      type: 'outcome_not_recorded',
      storageKey,
      operation,
      fence,
      reason,
      ...details,
    });
  }

  completionAbandoned(reason: 'max_hold' | 'error', error: unknown): void {
    const { storageKey, operation, fence } = this;
    const durationMs = this.held();
    this.sink.emit({
      type: 'completion_abandoned',
      storageKey,
      operation,
      fence,
      reason,
      error,
      durationMs,
    });
    this.end('abandoned');
  }

  leaseLost(phase: Phase): void {
    const { storageKey, operation, fence } = this;
    const durationMs = this.held();
    this.sink.emit({ type: 'lease_lost', storageKey, operation, fence, phase, durationMs });
    this.end('lease_lost');
  }

  /** Reports, once, that this process no longer holds the key. */
  end(result: ExecutionEndResult): void {
    if (this.ended) return;
    this.ended = true;
    const { storageKey, operation, fence } = this;
    const durationMs = this.held();
    this.sink.emit({ type: 'execution_end', storageKey, operation, fence, result, durationMs });
  }

  /** ms since the acquisition. */
  private held(): number {
    return performance.now() - this.acquiredAt;
  }
}
