// The error a duplicate in progress raises (Lambda retries it), and the others callers branch on.
export {
  InProgressError,
  isIdemError,
  LeaseLostError,
  MismatchError,
  ReplayedFailureError,
  StoreUnavailableError,
} from '@idem/core';
export type {
  BatchItemFailure,
  BatchOptions,
  BatchResponse,
  BatchSource,
  RecordHandler,
  RecordReport,
  RecordStatus,
} from './batch.js';
export { makeBatchHandler } from './batch.js';
export type {
  BatchHandlerFactory,
  DynamoDbStreamRecordLike,
  KinesisRecordLike,
  SqsRecordLike,
} from './batch-sources.js';
export {
  dynamoDbStreamSource,
  kinesisSource,
  makeDynamoDbStreamBatchHandler,
  makeKinesisBatchHandler,
  makeSqsBatchHandler,
  sqsSource,
} from './batch-sources.js';
export type { EngineOptions, LambdaContextLike, ScopeOption } from './lambda-engine.js';
export { DEFAULT_TIMEOUT_MARGIN_MS, functionScope } from './lambda-engine.js';
export type {
  IdempotencyInfo,
  IdempotentHandler,
  MakeIdempotentOptions,
} from './make-idempotent.js';
export { makeIdempotent } from './make-idempotent.js';
export type {
  ContextWithIdempotency,
  IdempotencyLastMiddleware,
  IdempotencyMiddleware,
  MiddyIdempotencyOptions,
  MiddyRequestLike,
} from './middy.js';
export { idempotency, idempotentTimeoutResponse } from './middy.js';
