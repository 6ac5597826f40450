export { LiveStreamBrokenError } from './attach.js';
export type { IdempotencyDecision, IdempotencyHandler, IncomingRequest } from './handler.js';
export { createIdempotencyHandler, withIdempotency } from './handler.js';
export { ANSWERED_OUTSIDE, answeredOutsideOf } from './head-source.js';
export type { ParsedKey } from './key-header.js';
export { formatIdempotencyKey, parseIdempotencyKey } from './key-header.js';
export { callListener } from './listener.js';
export { ATTACH_HEADER } from './live-answers.js';
export type { LiveStreamOptions } from './live-options.js';
export { GENERATION_HEADER } from './live-publish.js';
export {
  BodyPartsLimitError,
  MAX_MULTIPART_HEADER_BYTES,
  MAX_MULTIPART_PARTS,
  MalformedBodyError,
} from './multipart.js';
export type {
  FingerprintOptions,
  HttpIdempotencyOptions,
  ScopeHint,
  ScopeHook,
} from './options.js';
export type { ResponseHead, ResponsePolicy } from './policy.js';
export { finalOn2xx, finalOnceStarted } from './policy.js';
export type { ProblemDetails, ProblemType } from './problem.js';
export { PROBLEM_TYPES, problemResponse } from './problem.js';
export { answerInsteadOfAbort, answerMustAbort } from './record-response.js';
export { DEFAULT_RECORDED_HEADERS } from './recorded-headers.js';
export type { IdempotencyContext, ResponseRecorder } from './recorder.js';
export { OUTCOME_FORMAT } from './recorder.js';
export { REPLAYED_HEADER, replayResponse } from './replay.js';
export type { RequestBody } from './request-body.js';
export {
  BodyAlreadyReadError,
  BodyTooLargeError,
  bodyFromBytes,
  bodyFromParsed,
  isJsonContentType,
  readBodyLimited,
} from './request-body.js';
export { peekBody } from './request-body-peek.js';
export { LAST_EVENT_ID_HEADER } from './sse-resume.js';
