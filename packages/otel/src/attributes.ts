/** Attribute names on idem's spans and metrics. */
export const ATTR = {
  /** The storage key: SHA-256 of the scope and the client's key (64 hex); never the raw key. */
  storageKey: 'idem.storage_key',
  /** The request's operation (the scope's operation, e.g. `POST /charges`). */
  operation: 'idem.operation',
  /** hit | miss | conflict | mismatch | lease_lost | store_error | outcome_corrupt (and, on `idem.execute`, how it ended). */
  result: 'idem.result',
  /** The fencing token of the acquisition (or of the replayed record). */
  fence: 'idem.fence',
  /** True when the acquisition took over a passed lease. */
  takeover: 'idem.takeover',
  /** Size of the outcome as stored, in bytes. */
  outcomeBytes: 'idem.outcome.bytes',
  /** `Retry-After` of a conflict, in ms. */
  retryAfterMs: 'idem.retry_after_ms',
  /** The store method: acquire | complete | release | extend | get. */
  storeMethod: 'idem.store.method',
  /** ok | error (a failure or a timeout). */
  storeOutcome: 'idem.store.outcome',
  /** Where a lost lease was noticed: heartbeat | complete | release | max_hold. */
  leaseLostPhase: 'idem.lease_lost.phase',
} as const;

/** Span names. */
export const SPAN = {
  acquire: 'idem.acquire',
  execute: 'idem.execute',
  complete: 'idem.complete',
  replay: 'idem.replay',
} as const;

/** Metric instrument names. */
export const METRIC = {
  /**
   * Counter of results (`idem.result`, `idem.operation`; `idem.takeover` for misses,
   * `idem.store.method` for store errors, `idem.lease_lost.phase` for lost leases).
   */
  results: 'idem.results',
  /** Histogram of store call durations in seconds (`idem.store.method`, `idem.store.outcome`). */
  storeDuration: 'idem.store.duration',
  /** UpDownCounter of acquisitions this process holds right now (`idem.operation`). */
  inFlight: 'idem.leases.in_flight',
  /** Histogram of recorded outcome sizes in bytes (`idem.operation`). */
  outcomeSize: 'idem.outcome.size',
  /** Histogram of how long acquisitions were held, in seconds (`idem.result`, `idem.operation`). */
  executionDuration: 'idem.execution.duration',
} as const;
