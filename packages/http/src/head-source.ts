/**
 * What `ResponseRecorder.start` reads of a response's head, for an adapter that has
 * the headers in another form than a Web `Headers` (Node's outgoing headers): building one
 * costs more than the rest of `start`, and only a policy that reads them needs it.
 * @internal
 */
export interface ResponseHeadSource {
  /** The headers as a `Headers` (asked for only by a policy that reads them). */
  headers(): Headers;
  /** The pairs `pickRecordedHeaders(headers(), allowed)` gives. */
  recorded(allowed: ReadonlySet<string>): [string, string][];
  /** `headers().get('content-length')`. */
  contentLength(): string | null;
  /** `headers().get('content-type')`. */
  contentType(): string | null;
  /** `headers().get('trailer')`: the trailer fields the response declares. */
  trailer?(): string | null;
  /**
   * The reason phrase of the status line when it is not the status code's usual one (a
   * `writeHead(status, message)` or `res.statusMessage`), to record with the response.
   */
  reason?(): string | undefined;
}

/**
 * Key of `start` from a {@link ResponseHeadSource} on a recorder made by @idem/http
 * (registered: the Node entry point has its own copy of this module).
 * @internal
 */
export const START_FROM = Symbol.for('@idem/http.recorder.start-from');

/** `recorder`'s `start` from a {@link ResponseHeadSource}, when @idem/http made it. @internal */
export function startFromOf(
  recorder: object,
): ((status: number, source: ResponseHeadSource) => boolean) | undefined {
  return (recorder as { [START_FROM]?: (status: number, source: ResponseHeadSource) => boolean })[
    START_FROM
  ];
}

/**
 * Key of the function that gives a recorder made by @idem/http the trailer fields of the
 * response (name, value pairs as sent, in order), called before `finish` (registered, as
 * {@link START_FROM}). The fields its `Trailer` header declared are recorded with the outcome.
 * @internal
 */
export const TRAILERS = Symbol.for('@idem/http.recorder.trailers');

/** `recorder`'s trailer intake (see {@link TRAILERS}), when @idem/http made it. @internal */
export function trailersOf(
  recorder: object,
): ((fields: readonly (readonly [string, string])[]) => void) | undefined {
  return (recorder as { [TRAILERS]?: (fields: readonly (readonly [string, string])[]) => void })[
    TRAILERS
  ];
}

/**
 * Key of the function by which an adapter tells a recorder made by @idem/http that the
 * request was answered outside it (a request timeout mounted before the adapter) while its
 * handler ran, and that the handler then ran to its end (fulfilled): its side effect most
 * likely happened, but its own result reached no response. A response that is not final, or
 * that broke (`fail`), or none the adapter could read (call it instead of `finish`, with the
 * status that went out) leaves the final `answered_outside` not-recorded marker instead of
 * releasing the key, so a retry gets a 500 `outcome-not-recorded` problem, never a second run;
 * a final response that ends is recorded as usual. Registered, as {@link START_FROM}. Answers the recorder's end (never
 * rejects) when no response was started, else `undefined` (`finish` ends it).
 * @internal
 */
export const ANSWERED_OUTSIDE = Symbol.for('@idem/http.recorder.answered-outside');

/** `recorder`'s {@link ANSWERED_OUTSIDE} entry, when @idem/http made it. @internal */
export function answeredOutsideOf(
  recorder: object,
): ((status?: number) => Promise<void> | undefined) | undefined {
  return (recorder as { [ANSWERED_OUTSIDE]?: (status?: number) => Promise<void> | undefined })[
    ANSWERED_OUTSIDE
  ];
}
