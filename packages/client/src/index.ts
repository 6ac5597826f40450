export type { BatchItemContext, BatchItemResult, BatchResult, RunBatchOptions } from './batch.js';
export { runBatch } from './batch.js';
export type { IdemClientErrorCode } from './errors.js';
export { IdemClientError, isIdemClientError } from './errors.js';
export type {
  AttemptEvent,
  AttemptFailure,
  FetchFunction,
  IdempotencyInfo,
  IdempotentFetchOptions,
  KeyRequest,
  KeyStrategy,
} from './fetch-options.js';
export { createIdempotentFetch, getIdempotencyInfo } from './idempotent-fetch.js';
export type { ConflictAnswer } from './in-progress.js';
export {
  FINAL_PROBLEM_TYPES,
  IN_PROGRESS_PROBLEM_TYPE,
  isInProgressAnswer,
} from './in-progress.js';
export { formatKeyHeader, parseKeyHeader } from './key-header.js';
export { isRetryableStatus, parseRetryAfter } from './retry-policy.js';
