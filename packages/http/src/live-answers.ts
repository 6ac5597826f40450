import { callStore, InProgressError, type StoredOutcome } from '@idem/core';
import { respond } from './answers.js';
import { type AttachSettings, attachToStream, encoded } from './attach.js';
import { replayForAccepted, type UndecodedReason } from './content-coding.js';
import type { IdempotencyDecision } from './handler.js';
import { GENERATION_HEADER } from './live-publish.js';
import { mediaType } from './media-type.js';
import { type PreparedResponse, respondWith } from './prepared-response.js';
import { PROBLEM_TYPES } from './problem.js';
import { prepareReplay } from './replay.js';
import {
  chunksAfterEvent,
  hasEvent,
  LAST_EVENT_ID_ENCODING_HEADER,
  LAST_EVENT_ID_HEADER,
  lastEventIdOf,
  latin1ReadingOf,
} from './sse-resume.js';

/** Request header with which a caller opts out of attaching (`false`): it gets the 409. */
export const ATTACH_HEADER = 'idempotent-attach';

/** What a request says about resuming a stream. @internal */
export interface ResumeHints {
  /** The id `Last-Event-ID` names, decoded from UTF-8 ({@link lastEventIdOf}). */
  lastEventId: string | undefined;
  /**
   * The id the same bytes name when read as Latin-1 (a client before UTF-8 ids sent them so),
   * when the request does not mark its value UTF-8 and that reading differs
   * ({@link latin1ReadingOf}): a resume whose stream has an event of this id too is refused.
   */
  latin1EventId: string | undefined;
  /** The generation the caller holds (`Idempotent-Generation`), when it resumes one. */
  generation: string | undefined;
  /** False when the caller opted out of attaching. */
  attach: boolean;
}

/** Reads the resume hints of a request. @internal */
export function resumeHints(header: (name: string) => string | undefined): ResumeHints {
  // Empty: a resume that saw no event id yet, from the start of the stream.
  const sent = header(LAST_EVENT_ID_HEADER);
  const lastEventId = sent ? lastEventIdOf(sent) : undefined;
  const marked = header(LAST_EVENT_ID_ENCODING_HEADER)?.trim().toLowerCase() === 'utf-8';
  const latin1EventId =
    sent && lastEventId !== undefined && !marked ? latin1ReadingOf(sent, lastEventId) : undefined;
  const generation = header(GENERATION_HEADER)?.trim();
  const attach = header(ATTACH_HEADER)?.trim().toLowerCase() !== 'false';
  // What almost every request says (nothing): one object for all of them, never changed.
  if (lastEventId === undefined && generation === undefined && attach) return NO_HINTS;
  return { lastEventId, latin1EventId, generation, attach };
}

const NO_HINTS: ResumeHints = Object.freeze({
  lastEventId: undefined,
  latin1EventId: undefined,
  generation: undefined,
  attach: true,
});

/** 412: the caller resumes another generation than the one under the key. @internal */
export function generationChanged(): IdempotencyDecision {
  return respond(
    412,
    PROBLEM_TYPES.generationChanged,
    'Stream generation changed',
    'The stream under this key was produced by another execution than the one this request resumes; nothing was run',
  );
}

/**
 * 412: a resume after an event (`Last-Event-ID`) that names no generation, of a stream that is
 * not the key's first execution (fence above 1): an earlier execution's stream, whose event
 * ids may repeat in this one, may be the one the client saw, so its event cannot be trusted
 * to mark a place in this stream. @internal
 */
export function generationUnproven(): IdempotencyDecision {
  return respond(
    412,
    PROBLEM_TYPES.generationChanged,
    'Stream generation not named',
    `This request resumes a stream after an event (Last-Event-ID) without naming its generation (${GENERATION_HEADER}), and the stream under this key is not the first execution's: the client may have seen another one; nothing was run. Send the generation it saw, or no Last-Event-ID for the whole stream`,
  );
}

/**
 * Whether a resume of the stream of generation `fence` is refused: the caller names another
 * generation, or none while it resumes after an event of a generation other than the key's
 * first (only the first is sure to be the one it saw: fences grow with every execution).
 */
function refusedGeneration(hints: ResumeHints, fence: number): IdempotencyDecision | undefined {
  if (hints.generation !== undefined)
    return hints.generation === String(fence) ? undefined : generationChanged();
  return hints.lastEventId !== undefined && fence !== 1 ? generationUnproven() : undefined;
}

function encodedStream(): IdempotencyDecision {
  return respond(
    412,
    PROBLEM_TYPES.unknownEventId,
    'Compressed stream cannot be resumed',
    'The stream under this key has a Content-Encoding: it cannot be resumed after an event, only read whole (send no Last-Event-ID); nothing was run',
  );
}

/**
 * 412: the bytes of `Last-Event-ID` name an event of the stream read as UTF-8 and another one
 * read as Latin-1, and the request does not say which (`Idempotent-Last-Event-ID-Encoding:
 * utf-8`, as `@idem/client` sends it): either may be the one the client saw, so neither place
 * is trusted. @internal
 */
export function ambiguousEventId(): IdempotencyDecision {
  return respond(
    412,
    PROBLEM_TYPES.unknownEventId,
    'Ambiguous Last-Event-ID',
    `This Last-Event-ID names one event of the stream under this key read as UTF-8 and another read as Latin-1 (as clients before UTF-8 ids sent it); nothing was run. Send the id as UTF-8 with ${LAST_EVENT_ID_ENCODING_HEADER}: utf-8, or no Last-Event-ID for the whole stream`,
  );
}

const UNDECODED: Record<UndecodedReason, string> = {
  corrupt: 'its body does not decode',
  'too-large': 'its body decoded is larger than the bound (maxOutcomeBytes)',
  unsupported: 'this server cannot decode that coding',
  stacked: 'it has more content codings than this server decodes (at most 5)',
};

/** 406: the recorded coding is refused by the retry and could not be undone for it. @internal */
function codingNotAcceptable(reason: UndecodedReason): IdempotencyDecision {
  return respond(
    406,
    PROBLEM_TYPES.codingNotAcceptable,
    'Recorded content coding not acceptable',
    `The response recorded under this key has a Content-Encoding this request's Accept-Encoding refuses, and ${UNDECODED[reason]}; nothing was run. Retry with an Accept-Encoding that takes it`,
    { vary: 'accept-encoding' },
  );
}

/** 412: `Last-Event-ID` names no event of the stream under the key (or there is none). @internal */
export function unknownEventId(): IdempotencyDecision {
  return respond(
    412,
    PROBLEM_TYPES.unknownEventId,
    'Unknown Last-Event-ID',
    'No event of the stream under this key carries this Last-Event-ID; nothing was run',
  );
}

/**
 * The answer to a duplicate that found the key in progress: the live stream of that
 * generation when there is one to attach to, `'gone'` when the channel has no such generation
 * (it may have ended since the key was read: the caller reads the key again), else undefined
 * (the caller answers 409).
 * @internal
 */
export async function attachDecision(
  error: unknown,
  hints: ResumeHints,
  settings: AttachSettings | undefined,
  readers: Map<string, number>,
  acceptEncoding: string | undefined,
): Promise<IdempotencyDecision | 'gone' | undefined> {
  if (!(settings && hints.attach && error instanceof InProgressError)) return undefined;
  const { fence, storageKey } = error;
  if (fence === undefined || storageKey === undefined) return undefined;
  const refused = refusedGeneration(hints, fence);
  if (refused) return refused;
  const answer = await attachToStream(
    { storageKey, fence },
    { lastEventId: hints.lastEventId, latin1EventId: hints.latin1EventId, acceptEncoding },
    settings,
    readers,
  );
  if (answer.kind === 'stream')
    return { action: 'respond', response: answer.response, replayed: true };
  if (answer.kind === 'unknown-event') return unknownEventId();
  if (answer.kind === 'ambiguous-event') return ambiguousEventId();
  if (answer.kind === 'encoded') return encodedStream();
  if (!answer.gone) return undefined;
  // No such generation: not published yet (the handler has not answered, or not a stream),
  // or ended and dropped since the key was read. Only the latter is worth another look.
  const { store, storeTimeoutMs } = settings;
  const record = await callStore('get', storeTimeoutMs, () => store.get(storageKey)).catch(
    () => undefined,
  );
  return record?.status === 'completed' ? 'gone' : undefined;
}

/**
 * A replay, resumed after `Last-Event-ID` when the caller sends one and the outcome is an
 * event stream (with its generation named, and checked when the caller names one).
 * @internal
 */
export function replayDecision(
  outcome: StoredOutcome,
  fence: number,
  hints: ResumeHints,
  request: { acceptEncoding: string | undefined; origin: string | null; bound: number },
): IdempotencyDecision | Promise<IdempotencyDecision> {
  const accepted = replayForAccepted(
    prepareReplay(outcome, request.origin),
    request.acceptEncoding,
    request.bound,
  );
  // Answered at once unless the recorded coding has to be undone for this retry.
  if (!(accepted instanceof Promise)) return replayOf(accepted, fence, hints);
  return accepted.then((decoded) =>
    typeof decoded === 'string' ? codingNotAcceptable(decoded) : replayOf(decoded, fence, hints),
  );
}

/** The replay of `prepared` (as the retry reads it), resumed after its `Last-Event-ID`. */
function replayOf(
  prepared: PreparedResponse,
  fence: number,
  hints: ResumeHints,
): IdempotencyDecision {
  const type = prepared.headers.find(([name]) => name === 'content-type')?.[1];
  if (
    (hints.lastEventId === undefined && hints.generation === undefined) ||
    mediaType(type) !== 'text/event-stream'
  )
    return respondWith(prepared, true);
  const refused = refusedGeneration(hints, fence);
  if (refused) return refused;
  let chunks: readonly Uint8Array[] = prepared.chunks;
  if (hints.lastEventId !== undefined && encoded(prepared.headers)) return encodedStream();
  if (hints.lastEventId !== undefined) {
    if (hints.latin1EventId !== undefined && hasEvent(prepared.chunks, hints.latin1EventId))
      return ambiguousEventId();
    const rest = chunksAfterEvent(prepared.chunks, hints.lastEventId);
    if (!rest) return unknownEventId();
    chunks = rest;
  }
  const headers = [...prepared.headers, [GENERATION_HEADER, String(fence)] as const].sort((a, b) =>
    a[0] < b[0] ? -1 : 1,
  );
  const resumed: PreparedResponse = {
    status: prepared.status,
    reason: prepared.reason,
    headers,
    chunks,
    trailers: prepared.trailers,
  };
  return respondWith(resumed, true);
}
