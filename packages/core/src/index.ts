export { canonicalJson } from './canonical-json.js';
export type { JsonValue } from './canonical-json.js';
export { ManualClock, systemClock } from './clock.js';
export type { Clock } from './clock.js';
export { digestParts } from './encoding.js';
export type { EncodedPart } from './encoding.js';
export {
  IdemError,
  InProgressError,
  InvalidInputError,
  InvalidKeyError,
  LeaseLostError,
  MismatchError,
  NotCanonicalError,
  OutcomeCorruptError,
  OutcomeTooLargeError,
  ReplayedFailureError,
  StoreFullError,
  StoreUnavailableError,
  isIdemError,
} from './errors.js';
export type { IdemErrorCode } from './errors.js';
export type { IdemEvent, IdemEventListener, StoreOperation } from './events.js';
export { Execution } from './execution.js';
export type { ExecutionSettings } from './execution.js';
export { fingerprint } from './fingerprint.js';
export type { FingerprintInput } from './fingerprint.js';
export { createIdempotency, everythingFinal, resolveSettings, successOnly } from './idempotency.js';
export type {
  BeginResult,
  ExecuteResult,
  Idempotency,
  IdempotencyOptions,
  IdempotentRequest,
  OperationContext,
  OutcomePolicy,
  ResolvedSettings,
  Settled,
  WaitOptions,
} from './idempotency.js';
export {
  MAX_KEY_LENGTH,
  batchItemKey,
  deriveKey,
  deriveStorageKey,
  generateKey,
  isValidKey,
  validateKey,
} from './keys.js';
export type { GenerateKeyOptions, Scope } from './keys.js';
export { decodeOutcome, encodeOutcome } from './outcome-codec.js';
export type { StoredOutcome } from './outcome-codec.js';
export { bytesSerializer, jsonSerializer } from './serializer.js';
export type { OutcomeSerializer } from './serializer.js';
export { callStore } from './store-call.js';
export type {
  AcquireInput,
  AcquireResult,
  CompleteInput,
  ExtendInput,
  IdempotencyStore,
  OwnerWriteResult,
  RecordStatus,
  ReleaseInput,
  StoreCapabilities,
  StoredRecord,
} from './store.js';
