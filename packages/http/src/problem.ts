import { type PreparedResponse, webResponse } from './prepared-response.js';

/** Stable RFC 9457 `type` URIs of the answers @idem/http gives on its own. */
export const PROBLEM_TYPES = {
  /** 400: the method needs an `Idempotency-Key` and the request has none. */
  missingKey: 'https://idem.dev/problems/missing-key',
  /** 400: the `Idempotency-Key` is empty, too long, not printable ASCII or badly quoted. */
  invalidKey: 'https://idem.dev/problems/invalid-key',
  /**
   * 413: the request body is larger than `maxBodyBytes` (or a multipart body has more parts,
   * or more header bytes in a part, than the fingerprint reads).
   */
  bodyTooLarge: 'https://idem.dev/problems/body-too-large',
  /**
   * 408: the rest of the request body did not come in within the time the adapter waits for
   * it (`@idem/fastify`'s `bodyTimeoutMs`); nothing was run or stored.
   */
  bodyTimeout: 'https://idem.dev/problems/body-timeout',
  /**
   * 400: the request target (an absolute-form URL: a port past 65535, a bad escape in the
   * host) does not parse as a URL; nothing was run or stored.
   */
  invalidTarget: 'https://idem.dev/problems/invalid-target',
  /** 400: the body does not parse as its content type says (a multipart body without its boundary). */
  malformedBody: 'https://idem.dev/problems/malformed-body',
  /** 409: a request with this key is still being processed. */
  inProgress: 'https://idem.dev/problems/in-progress',
  /** 422: the key was already used with a different request. */
  keyReused: 'https://idem.dev/problems/key-reused',
  /** 503: the idempotency store could not be reached (fail closed). */
  storeUnavailable: 'https://idem.dev/problems/store-unavailable',
  /**
   * 503: the idempotency store is full (a bounded store's byte or entry budget is taken by
   * live records) and takes no new key until records expire; nothing was run.
   */
  storeFull: 'https://idem.dev/problems/store-full',
  /**
   * 500: the server's scope hook gave no principal for the request (a configuration error,
   * such as the hook running before authentication); nothing was run or stored.
   */
  noPrincipal: 'https://idem.dev/problems/no-principal',
  /**
   * 500: the first request with this key ran, but its response could not be recorded (over
   * `maxOutcomeBytes` or the store's limit); it is not run again for the key's retention.
   */
  outcomeNotRecorded: 'https://idem.dev/problems/outcome-not-recorded',
  /**
   * 406: the recorded response has a content coding (a compressing middleware after idem)
   * that the retry's `Accept-Encoding` refuses, and its body could not be decoded for it
   * (corrupt, larger decoded than `maxOutcomeBytes`, or a coding this runtime cannot decode);
   * nothing was run. The same key with an `Accept-Encoding` that takes the coding replays it.
   */
  codingNotAcceptable: 'https://idem.dev/problems/coding-not-acceptable',
  /** 500: a stored outcome could not be read back. */
  outcomeUnreadable: 'https://idem.dev/problems/outcome-unreadable',
  /** 500: the handler threw; recorded only when the outcome policy makes failures final. */
  handlerFailed: 'https://idem.dev/problems/handler-failed',
  /**
   * 412: `Last-Event-ID` names no event of the stream recorded (or streaming) under the key;
   * nothing could be resumed, nothing was run.
   */
  unknownEventId: 'https://idem.dev/problems/unknown-event-id',
  /**
   * 412: the request resumes a stream generation (`Idempotent-Generation`) other than the
   * one under the key (the first execution was taken over after a lost lease); nothing was
   * run. A stream of another execution is never spliced onto the one the client holds.
   */
  generationChanged: 'https://idem.dev/problems/generation-changed',
} as const;

/** One of {@link PROBLEM_TYPES}. */
export type ProblemType = (typeof PROBLEM_TYPES)[keyof typeof PROBLEM_TYPES];

/** An RFC 9457 problem details object as @idem/http sends it. */
export interface ProblemDetails {
  type: ProblemType;
  title: string;
  status: number;
  detail?: string;
}

const encoder = new TextEncoder();
const PROBLEM_HEADERS: readonly (readonly [string, string])[] = [
  ['cache-control', 'no-store'],
  ['content-type', 'application/problem+json'],
];

/** {@link problemResponse}, prepared. @internal */
export function prepareProblem(
  problem: ProblemDetails,
  headers?: Record<string, string>,
): PreparedResponse {
  const pairs = headers
    ? [...new Headers({ ...Object.fromEntries(PROBLEM_HEADERS), ...headers })]
    : PROBLEM_HEADERS;
  return {
    status: problem.status,
    headers: pairs,
    chunks: [encoder.encode(JSON.stringify(problem))],
  };
}

/** Builds an `application/problem+json` response; never cached by intermediaries. */
export function problemResponse(
  problem: ProblemDetails,
  headers?: Record<string, string>,
): Response {
  return webResponse(prepareProblem(problem, headers));
}
