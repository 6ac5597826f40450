// The adapter kit: the plumbing every store repeats (typed errors, input checks, owner-write
// answers, time limits), so that a store adapter writes only its primitives.
export type {
  AdminDeleteAnswer,
  AdminPrimitives,
  AdminRecordRead,
  AdminReleaseAnswer,
  ServiceNumber,
} from './adapter-kit/admin.js';
export { createStoreAdmin, meetsExpectation } from './adapter-kit/admin.js';
export type { StoreStringRules } from './adapter-kit/input-checks.js';
export {
  checkClock,
  checkDuration,
  checkObject,
  checkOutcome,
  checkPositiveInteger,
  checkStoreString,
  checkTimerMs,
  durationText,
  forcedReleaseOwner,
  MAX_TIMER_MS,
  readClock,
  unknownOptionMessage,
} from './adapter-kit/input-checks.js';
export {
  blocksAcquire,
  inspectionOf,
  NOT_OWNER,
  OWNED,
  ownerWriteResult,
  sameBytes,
} from './adapter-kit/owner-writes.js';
export type { StoreErrorRules } from './adapter-kit/store-errors.js';
export {
  errorMessage,
  guardStoreCall,
  settleWithin,
  toStoreError,
} from './adapter-kit/store-errors.js';
export type {
  Admission,
  AdmissionKind,
  AdmissionOptions,
  AdmissionRunOptions,
} from './admission.js';
export { admitStore, createAdmission } from './admission.js';
export type { JsonValue } from './canonical-json.js';
export { canonicalJson, MAX_CANONICAL_DEPTH } from './canonical-json.js';
export type { Clock } from './clock.js';
export { elapsedClock, isManualClock, ManualClock, systemClock } from './clock.js';
export type { EncodedPart } from './encoding.js';
export { digestParts } from './encoding.js';
export type { IdemErrorCode, NotCanonicalReason, NotRecordedReason } from './errors.js';
export {
  boundedText,
  IdemError,
  InProgressError,
  InvalidInputError,
  InvalidKeyError,
  invalidRangeInput,
  invalidTypeInput,
  isIdemError,
  LeaseLostError,
  MismatchError,
  markErrorClass,
  NotCanonicalError,
  OutcomeCorruptError,
  OutcomeNotRecordedError,
  OutcomeTooLargeError,
  quotedInput,
  ReplayedFailureError,
  StoreFullError,
  StoreUnavailableError,
  shownInput,
} from './errors.js';
export type {
  ExecutionEndResult,
  IdemEvent,
  IdemEventListener,
  StoreOperation,
} from './events.js';
export type { ExecutionSettings } from './execution.js';
export { Execution } from './execution.js';
export type { FingerprintInput } from './fingerprint.js';
export { fingerprint } from './fingerprint.js';
export { MAX_PENDING_GIVE_BACKS } from './give-back.js';
export { beginAtOnce, createIdempotency, decideOutcome } from './idempotency.js';
export type {
  BeginOptions,
  BeginResult,
  DrainOptions,
  ExecuteResult,
  Idempotency,
  IdempotentRequest,
  OperationContext,
} from './idempotency-types.js';
export type { GenerateKeyOptions, Scope } from './keys.js';
export {
  batchItemKey,
  deriveKey,
  deriveStorageKey,
  generateKey,
  isValidKey,
  MAX_KEY_LENGTH,
  validateKey,
} from './keys.js';
export type {
  LiveEntry,
  LiveGeneration,
  LivePublisher,
  LivePublishInput,
  LiveRead,
  LiveReader,
  LiveReadOptions,
  LiveStreamStats,
  LiveStreams,
} from './live-streams.js';
export { createMemoryLiveStreams } from './memory-live-streams.js';
export type { NotRecordedDetails } from './not-recorded.js';
export {
  markerFailureOf,
  NOT_RECORDED_KIND,
  notRecordedOutcome,
  readNotRecorded,
} from './not-recorded.js';
export type { StoredOutcome } from './outcome-codec.js';
export { decodeOutcome, encodeOutcome } from './outcome-codec.js';
export type {
  OutcomeCodec,
  OutcomeCodecContext,
  OutcomeCodecOptions,
  OutcomeKey,
} from './outcome-sealing.js';
export { createOutcomeCodec } from './outcome-sealing.js';
export type { OutcomeSerializer } from './serializer.js';
export { bytesSerializer, jsonSerializer } from './serializer.js';
export type {
  IdempotencyOptions,
  OutcomePolicy,
  ResolvedSettings,
  Settled,
  WaitOptions,
} from './settings.js';
export {
  checkOutcomePolicy,
  DEFAULT_MAX_OUTCOME_BYTES,
  everythingFinal,
  outcomePolicyAnswer,
  resolveSettings,
  successOnly,
} from './settings.js';
export { sha256Implementation, sha256Settled } from './sha256.js';
export { lastEventIdForm, SseAnchors } from './sse-anchors.js';
export type {
  AcquireInput,
  AcquireResult,
  CompleteInput,
  DeleteExpectation,
  DeleteResult,
  ExtendInput,
  ForceReleaseExpectation,
  ForceReleaseResult,
  IdempotencyStore,
  OwnerWriteResult,
  RecordInspection,
  RecordStatus,
  ReleaseInput,
  StoreAdmin,
  StoreCallContext,
  StoreCapabilities,
  StoreClock,
  StoredRecord,
} from './store.js';
export type { Latin1CompleteInput, StoreCallOptions, SyncFormOptions } from './store-call.js';
export {
  answersSynchronously,
  callStore,
  isThenable,
  SYNC_FORM,
  syncFormOf,
} from './store-call.js';
export type { StoreRetryOptions } from './store-retry.js';
export { retryStoreCall } from './store-retry.js';
export type { OutcomeOpenSettings } from './stored-outcome.js';
export { openStoredOutcome } from './stored-outcome.js';
