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

/**
 * Key of the function by which `recordServerResponse` asks a recorder made by @idem/http, right
 * after the response ended, whether it now waits for held work (see `holdWhile`) before judging
 * that end; and, with `true`, tells it that the app wrote to the response (or tried to: Express's
 * `res.json()` throws ERR_HTTP_HEADERS_SENT) after that end while it waited. Such a write shows
 * the held handler reached its own answer after another one went out: its work ran, so the end
 * is never released for a retry to run it again (the `answered_outside` marker), even when the
 * write threw and the handler's promise rejected with it. @internal
 */
export const HELD_AFTER_END = Symbol.for('@idem/http.recorder.held-after-end');

/** `recorder`'s {@link HELD_AFTER_END} entry, when @idem/http made it. @internal */
export function heldAfterEndOf(recorder: object): ((wrote?: boolean) => boolean) | undefined {
  return (recorder as { [HELD_AFTER_END]?: (wrote?: boolean) => boolean })[HELD_AFTER_END];
}

/**
 * Key of the function by which `recordServerResponse` tells a recorder made by @idem/http that
 * the app ended the response outside the held handler's own work while that work still ran (a
 * request timeout's answer; see `runHeld`): however soon the handler settles after it (in the
 * same turn, woken by that very answer), that end is not its own answer, so a response that
 * is not final is never released for it (the `answered_outside` marker once it ran to its
 * end). Called right before `finish`. @internal
 */
export const ENDED_OUTSIDE = Symbol.for('@idem/http.recorder.ended-outside');

/** `recorder`'s {@link ENDED_OUTSIDE} entry, when @idem/http made it. @internal */
export function endedOutsideOf(recorder: object): (() => void) | undefined {
  return (recorder as { [ENDED_OUTSIDE]?: () => void })[ENDED_OUTSIDE];
}

/**
 * Key of the function by which an adapter tells a recorder made by @idem/http that the handler
 * given to `holdWhile` settled and left its response unanswered, no head written, the app having
 * taken the response over (Koa's `ctx.respond = false`) or its error swallowed: nothing the
 * adapter runs will answer it. Before the head a client that left does not make the silence
 * count (the handler is working, see `clientGone`); once the handler settled without answering,
 * its client gone (before or after this call), the silence counts from then on as after a
 * head: a response that stays unanswered for a whole lease stops renewing, so the key is free
 * within two leases instead of `maxHoldMs`, and one answered and ended after all is still
 * recorded. Nothing once the head went out or the outcome is decided. @internal
 */
export const LEFT_UNANSWERED = Symbol.for('@idem/http.recorder.left-unanswered');

/** Tells `recorder` its handler left the response unanswered (see {@link LEFT_UNANSWERED}). @internal */
export function leftUnanswered(recorder: object): void {
  (recorder as { [LEFT_UNANSWERED]?: () => void })[LEFT_UNANSWERED]?.();
}

/**
 * Key of the function by which `recordServerResponse` asks a recorder made by @idem/http, for a
 * response whose client left and that it keeps draining, whether to let it go: once its capture
 * passed `maxOutcomeBytes` nothing will be recorded and nobody reads it, so the recorder writes
 * the not-recorded marker now (retries get the 500 `outcome-not-recorded` problem, never a
 * second run) and answers true; the response's held `'close'` then reaches the app (Koa destroys
 * its stream body) instead of an endless body being drained until `maxHoldMs`. @internal
 */
export const GIVE_UP_UNRECORDED = Symbol.for('@idem/http.recorder.give-up-unrecorded');

/** Asks `recorder` whether to let a drained response go (see {@link GIVE_UP_UNRECORDED}). @internal */
export function giveUpUnrecorded(recorder: object): boolean {
  return (recorder as { [GIVE_UP_UNRECORDED]?: () => boolean })[GIVE_UP_UNRECORDED]?.() === true;
}

/**
 * Key of `fail` for a request that failed while a handler given to `holdWhile` may still run
 * (an adapter whose framework threw a timeout's answer at it, the handler it overtook running
 * on: Hono's `timeout()` after idem under an `app.onError` that rethrows). Plain `fail`
 * released the key at once, and a retry ran that handler beside itself (rev34h). This keeps
 * the key held until the held handlers settle, then releases it if one threw and leaves the
 * `answered_outside` marker if they ran to their end; with none running it is `fail`. It
 * never delays the failed request's answer. @internal
 */
export const FAIL_AFTER_HELD = Symbol.for('@idem/http.recorder.fail-after-held');
