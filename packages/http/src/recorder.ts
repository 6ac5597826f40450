import { type Execution, isIdemError, outcomePolicyAnswer, type StoredOutcome } from '@idem/core';
import { storeUnavailable } from './answers.js';
import { CaptureBuffer } from './capture-buffer.js';
import type { IdempotencyDecision } from './handler.js';
import {
  ANSWERED_OUTSIDE,
  ENDED_OUTSIDE,
  FAIL_AFTER_HELD,
  GIVE_UP_UNRECORDED,
  HELD_AFTER_END,
  LEFT_UNANSWERED,
  type ResponseHeadSource,
  START_FROM,
  TRAILERS,
} from './head-source.js';
import { LIVE_CAPTURE, LIVE_GENERATION, type LiveSettings, LiveTee } from './live-publish.js';
import { mediaType } from './media-type.js';
import type { ResponseHead, ResponsePolicy } from './policy.js';
import { recordWebResponse } from './record-response.js';
import {
  CORS_RESPONSE_HEADERS,
  declaredTrailers,
  pickRecordedHeaders,
  pickRecordedTrailers,
} from './recorded-headers.js';

/** What the handler can use of the idempotent execution it runs in. */
export interface IdempotencyContext {
  /** The client's key. */
  key: string;
  /** The derived storage key. */
  storageKey: string;
  /** Fencing token: pass it to downstream writes that can reject a lower one. */
  fence: number;
  /** Aborts when the lease on the key is lost. */
  signal: AbortSignal;
  /**
   * The logical request's id (32 hex characters): the same for every execution of it (a
   * retry after a failure, a takeover after a crash), a new one once the key is used again
   * after its record's retention passed. Name what the handler creates elsewhere (an order,
   * a message, a ledger row) by it rather than by the key, and fence its writes with `fence`.
   */
  originId: string;
}

/** Format tag of the outcomes @idem/http stores. */
export const OUTCOME_FORMAT = 'idem/http/v1';

/**
 * Records one response while it is sent. Framework adapters drive it: `start` with the
 * status and headers, `capture` every body chunk in order, then `finish` (or `fail` when
 * the body broke). {@link ResponseRecorder.recordResponse} does all of it for a Web
 * `Response`.
 *
 * Guarantees: when the policy makes the response final, the outcome is persisted before
 * `finish` resolves, and the caller MUST NOT send the end of the response (held chunks and
 * the end of the stream) before then; when `finish` rejects, the caller MUST abort the
 * response instead of ending it, so that no client takes an unrecorded response for a
 * complete one. A final response larger than `maxOutcomeBytes` still streams to its caller
 * whole, but the recorder stops holding its bytes once past the cap (memory stays bounded)
 * and `finish` records a not-recorded marker instead: a retry gets a 500
 * `outcome-not-recorded` problem, never a second execution.
 */
export interface ResponseRecorder {
  /** What the handler may use: key, fence, abort signal. */
  readonly context: IdempotencyContext;
  /**
   * Declares status and headers (once); returns whether the response will be recorded. When
   * the outcome policy throws on a status of 200..599, the response is final (recorded and
   * replayed: the handler never runs twice for a policy's bug) and the policy's error goes to
   * `onWarning`; `start` does not throw it.
   */
  start(status: number, headers: Headers): boolean;
  /**
   * Takes the next body chunk. Returns true when the caller may send it now (after the
   * chunks it holds, in order), false when it MUST hold it until `finish` resolves (the last
   * bytes of a body of known length).
   */
  capture(chunk: Uint8Array): boolean;
  /**
   * The body ended: records the outcome, or a not-recorded marker when it was over the cap,
   * or releases the key when the response is not final; see the guarantees above. A response
   * that is not final, ended while a handler given to `holdWhile` still runs (the 503 of a
   * request-timeout middleware mounted outside the adapter), is not the handler's outcome:
   * `finish` resolves at once (the answer goes out), but the key stays held, its lease renewed
   * (up to `maxHoldMs`), until every such handler settled, so a retry meanwhile gets 409 and
   * never runs beside it. Then, when every one of them was fulfilled (ran to its end: its side
   * effect most likely happened) after running on past the turn the response ended in, a final
   * `answered_outside` not-recorded marker is written (a warning goes to `onWarning`; retries
   * get a 500 `outcome-not-recorded` problem, never a second run); when one of them rejected,
   * or settled within that turn (its own answer, given as it returned), the key is released.
   * A response ended outside the handler's own work (an adapter that runs it with `runHeld`
   * of `@idem/http/node`) is never its own answer, however soon it settles. When the client
   * left before that end and a held handler has not settled a whole lease after it, the
   * marker is written then (a handler awaiting a 'finish' that never comes).
   */
  finish(): Promise<void>;
  /**
   * The handler failed or its body broke: releases the key so a retry executes again. Never
   * rejects (after a `finish` that rejected, it has nothing left to do).
   */
  fail(error: unknown): Promise<void>;
  /**
   * The client went away before the end. The body is still read and recorded when it ends;
   * heartbeats go on while it keeps producing output, and stop once it has been silent for a
   * whole lease, so a handler that stopped writing frees the key within two leases, never
   * holding it for `maxHoldMs`. The silence counts from the head (`start`) on: a client that
   * left before it (its own timeout while a slow call runs) leaves a handler that has not
   * answered yet, which is working, not stuck: its lease is renewed as for a client that
   * stays (up to `maxHoldMs`), and its retries get 409 until its outcome lands, never a
   * second run beside it. Adapters call it too for a response whose handler failed
   * after its head went out and which nothing ended (Koa leaves it open): whether anything
   * still writes to it is not known, so it is watched alike.
   */
  clientGone(): void;
  /**
   * The handler is still running until `running` settles (an adapter that awaits it, as Koa's
   * `await next()`, Fastify's route handler, Nest's handler): until then a client that left does not make its
   * silence count, even past the head (a handler that wrote its head and still works is not
   * stuck: its lease is renewed up to `maxHoldMs`, as for a client that stays), and the
   * silence watch of `clientGone` starts afresh when it settles; and a response that is not
   * final does not release the key before it settled (see `finish`), unless `keepKey` is
   * false (an adapter that holds its `finish` itself while the handler's work runs after
   * another answer, as Nest's does, and whose `running` also stands for work the handler only
   * started). Never rejects, whatever `running` does. Call it before the response can end
   * (when the handler starts).
   */
  holdWhile(running: PromiseLike<unknown>, options?: { keepKey?: boolean }): void;
  /**
   * The execution failed, but its body may still be written and end normally (a stream
   * helper that catches the handler's throw and closes the stream): when the body ends, the
   * key is released instead of the response recorded. Until then nothing changes: the key
   * stays held (renewed) while anything may still write, so a retry never runs beside it.
   */
  failAtEnd(): void;
  /**
   * Wraps a Web `Response` so its body is recorded while it streams to the caller; the
   * returned body ends (or errors) only after `finish` settled; for a response without a body
   * whose outcome has not landed within `completionWaitMs`, it resolves with a 503
   * `store-unavailable` problem (with `Retry-After`) instead. `signal` is the request's:
   * when it aborts (the client went away), the body is read to its end and recorded
   * without a reader (see `clientGone`), unless the execution's lease is lost first
   * (`context.signal`: taken over, lapsed, or `maxHoldMs` passed): the body is then
   * cancelled and the key released, so a body that never ends is not read forever. `signal`
   * may be given as a function that returns it, called only when the body has to be read
   * (not for @hono/node-server's lightweight response, whose whole body it holds): a server
   * whose request makes its signal on first use (node-server's) then makes none.
   */
  recordResponse(
    response: Response,
    signal?: AbortSignal | (() => AbortSignal | undefined),
  ): Promise<Response>;
  /**
   * Call right before the handler starts, with no `await` between the call and the start:
   * `undefined` when the handler may start (checked synchronously: no microtask hop added);
   * when the event loop was held up since the acquisition until the lease's runway (its last
   * tenth, at most 1 s), the handler must not start (a caller may take the key over once the
   * lease passes): the key is given back and the promise resolves to the decision to answer
   * with instead, a 503 problem (a retry with the same key runs); every later call answers
   * that same promise. Once the response started (`start`, `recordResponse`) or the recorder
   * ended (`finish`, `fail`) it answers `undefined` and touches nothing: the handler ran,
   * and only its lease (the context's `signal`) decides then.
   */
  lateStart(): Promise<Extract<IdempotencyDecision, { action: 'respond' }>> | undefined;
}

interface RecorderSettings {
  isFinal: ResponsePolicy;
  recordedHeaders: ReadonlySet<string>;
  /** Largest encoded outcome recorded (the engine's `maxOutcomeBytes`). */
  maxOutcomeBytes: number;
  leaseMs: number;
  failOpen: boolean;
  /** `Retry-After` (s) of the 503 that `recordResponse` answers for a body-less response it could not record. */
  unavailableRetryAfter: number;
  warn: (message: string) => void;
  /** Where final streamed responses are published for duplicates to attach to; none when off. */
  live?: LiveSettings;
}

/**
 * What a policy sees of a response whose headers are not a `Headers` yet: they are built
 * when the policy reads them. A class, not an object literal with a getter: such a literal
 * made every first execution measurably slower.
 */
class LazyHead implements ResponseHead {
  readonly #source: ResponseHeadSource;
  constructor(
    readonly status: number,
    source: ResponseHeadSource,
  ) {
    this.#source = source;
  }
  get headers(): Headers {
    return this.#source.headers();
  }
}

/**
 * The context handed to the handler. Its `signal` is the execution's, read only when used:
 * the engine makes the `AbortController` behind it on first read, and most handlers never
 * read it (making one for every execution was about 5 % of a first execution's CPU in
 * process). A class (see {@link LazyHead}) whose `signal` is an own accessor (see below).
 */
class ExecutionContext implements IdempotencyContext {
  /**
   * `signal` as an own enumerable accessor, as the plain object this was had it as a member:
   * a copy of the context (`{ ...context }`, `Object.keys`) still has the signal. One
   * descriptor for every context.
   */
  static readonly #signal: PropertyDescriptor = {
    get(this: ExecutionContext): AbortSignal {
      return this.#execution.signal;
    },
    enumerable: true,
    configurable: true,
  };
  /** `originId` the same way: a digest, computed when a handler reads it. */
  static readonly #originId: PropertyDescriptor = {
    get(this: ExecutionContext): string {
      return this.#execution.originId;
    },
    enumerable: true,
    configurable: true,
  };
  readonly storageKey: string;
  readonly fence: number;
  declare readonly signal: AbortSignal;
  declare readonly originId: string;
  readonly #execution: Execution;
  constructor(
    readonly key: string,
    execution: Execution,
  ) {
    this.storageKey = execution.storageKey;
    this.fence = execution.fence;
    this.#execution = execution;
    Object.defineProperty(this, 'signal', ExecutionContext.#signal);
    Object.defineProperty(this, 'originId', ExecutionContext.#originId);
  }
}

/** What `finish` answers when the outcome was stored at once: one promise for every recorder. */
const SETTLED = Promise.resolve();

/** @internal */
export function createRecorder(
  key: string,
  execution: Execution,
  settings: RecorderSettings,
  origin: string | null = null,
): ResponseRecorder {
  const context: IdempotencyContext = new ExecutionContext(key, execution);
  let head: { status: number; headers: [string, string][] } | undefined;
  let final = false;
  let expectedLength: number | undefined;
  let seen = 0;
  let buffer: CaptureBuffer | undefined;
  let done: Promise<void> | undefined;
  let tee: LiveTee | undefined;
  let stored = false;
  // The execution failed though its body may end normally (`failAtEnd`): released at the end.
  let failedAtEnd = false;
  let refused: ReturnType<ResponseRecorder['lateStart']>;
  /** The `Trailer` header of a final response (read when trailers come). */
  let trailerHeader: string | null | undefined;

  function start(status: number, headers: Headers): boolean {
    return startWith(
      status,
      { status, headers },
      {
        headers: () => headers,
        recorded: (allowed) => pickRecordedHeaders(headers, allowed),
        contentLength: () => headers.get('content-length'),
        contentType: () => headers.get('content-type'),
        trailer: () => headers.get('trailer'),
      },
    );
  }

  // The policy gets the headers only if it reads them (the built-in ones do not).
  function startFrom(status: number, source: ResponseHeadSource): boolean {
    return startWith(status, new LazyHead(status, source), source);
  }

  function startWith(status: number, response: ResponseHead, source: ResponseHeadSource): boolean {
    if (head) return final;
    // A status a Web Response cannot carry (1xx, 600-999) could never be replayed: not final.
    if (status >= 200 && status <= 599) {
      try {
        // A Promise (an async isFinal) is a policy fault, as a throw: see outcomePolicyAnswer.
        final = outcomePolicyAnswer(settings.isFinal(response));
      } catch (policyError) {
        // A policy that throws is a bug of the app's, and never costs a second run of its
        // handler: the response it gave is final (recorded, replayed to every retry) and goes
        // to its client as written; the policy's error goes to `onWarning`. Released, a retry
        // ran the handler again (conrev24; core's execute() records such a success alike).
        // The 500 problem of a handler that threw too: the policy judges responses, and an
        // adapter's error handler writes that 500 like any response (the paths agree).
        final = true;
        settings.warn(
          `The outcome policy (isFinal) threw on the ${status} response of ${execution.storageKey}; the response is recorded as final and replayed to retries. ${describeError(policyError)}`,
        );
      }
    }
    head = { status, headers: source.recorded(settings.recordedHeaders) };
    // The client left while the handler was still working: its silence counts from now on.
    if (leftEarly && !done) armIdle();
    if (final) {
      const reason = source.reason?.();
      const plain: StoredOutcome['meta'] =
        reason === undefined
          ? { format: OUTCOME_FORMAT, status, headers: head.headers, chunks: [] }
          : { format: OUTCOME_FORMAT, status, reason, headers: head.headers, chunks: [] };
      // The CORS fields with the Origin they were computed for (see CORS_RESPONSE_HEADERS);
      // only when there are some: an outcome without them keeps the shape it always had.
      const cors = source.recorded(CORS_RESPONSE_HEADERS);
      const meta = cors.length > 0 ? { ...plain, cors: { origin, headers: cors } } : plain;
      buffer = new CaptureBuffer(settings.maxOutcomeBytes, meta);
      trailerHeader = source.trailer?.() ?? null;
      const live = settings.live;
      // A lost lease (taken over, lapsed) publishes nothing: its stream cannot end well. Its
      // signal is read last: the engine makes an AbortController on the first read, and a
      // response of a type that is never published needs none.
      if (
        live &&
        !buffer.overflowed &&
        live.types.has(mediaType(source.contentType())) &&
        !execution.signal.aborted
      )
        tee = new LiveTee(execution, live, settings.leaseMs, head);
    }
    const length = source.contentLength();
    if (length !== null && /^\d+$/.test(length.trim())) expectedLength = Number(length);
    return final;
  }

  let idleTimer: ReturnType<typeof setTimeout> | undefined;
  // Handlers still running (see `holdWhile`): their silence is work, never a stuck body.
  let running = 0;
  // Those of them that keep the key from a response that is not final (see `settle`), and
  // the release that waits for them: called once none of them runs any more.
  let keeping = 0;
  let idle: (() => void) | undefined;
  // One of them rejected: the held key is released, never marked (see `answeredOutside`).
  let heldFailed = false;
  // The client left before the head (see `clientGone`): the silence watch starts with it.
  let leftEarly = false;
  // The handler settled and left its response unanswered (see LEFT_UNANSWERED): a client gone
  // makes its silence count without a head.
  let unanswered = false;
  // The adapter saw the request answered outside it while the handler ran, and the handler
  // then ran to its end (see ANSWERED_OUTSIDE): a response that is not final is marked.
  let outside = false;
  // The response ended and its judgment waits for held handlers (see `settle`); and the app
  // wrote to it after that end meanwhile (see HELD_AFTER_END).
  let waitingForHeld = false;
  let wroteAfterEnd = false;
  // The response was ended outside the held handler's own work while it ran (see ENDED_OUTSIDE).
  let endedOutside = false;
  // The client left before the end (see `clientGone`), and the watch on held work that does
  // not settle after the end (see `watchHeld`).
  let gone = false;
  let heldSilence: ReturnType<typeof setTimeout> | undefined;

  function capture(chunk: Uint8Array): boolean {
    if (!head) throw misuse('ResponseRecorder.start must be called before capture');
    if (idleTimer !== undefined) armIdle();
    if (chunk.length === 0) return true;
    seen += chunk.length;
    buffer?.append(chunk);
    if (tee && buffer) tee.chunk(seen - chunk.length, buffer.held());
    // Hold the chunk that completes a body of declared length (the client takes it for the
    // end). Past that length the body is longer than declared (broken anyway): holding the
    // rest would buffer it whole, so it flows again, held chunks first.
    return expectedLength === undefined || seen !== expectedLength;
  }

  // Attached readers end as the caller does: normally only once the outcome is stored. The
  // usual end, an outcome a store that answers at once (the memory store) recorded before
  // `completeNow` returned, makes no promise: each costs more once promise hooks are on (the
  // held handler's AsyncLocalStorage in Node 20; benchmarks/HISTORY.md, twenty-sixth pass).
  function settle(): Promise<void> {
    if (!head || !buffer || failedAtEnd || buffer.overflowed) return settleOtherwise();
    let writing: Promise<void> | undefined;
    try {
      writing = execution.completeNow(buffer.outcome());
      if (writing === undefined) {
        stored = true;
        tee?.end(true);
        return SETTLED;
      }
    } catch (error) {
      if (!stored) tee?.end(false);
      return Promise.reject(error);
    }
    return recorded(writing);
  }

  // The outcome's write that did not land at once.
  async function recorded(writing: Promise<void>): Promise<void> {
    try {
      await writing;
      stored = true;
    } catch (error) {
      // The store refused the outcome (its own limit, or full): core wrote the not-recorded
      // marker instead, so a retry gets a problem rather than a second execution.
      if (isIdemError(error, 'OUTCOME_TOO_LARGE') || isIdemError(error, 'STORE_FULL')) {
        settings.warn(
          `Response of ${execution.storageKey} was not recorded (${error.code}); retries with its key get a 500 outcome-not-recorded problem`,
        );
        return;
      }
      // Fail open: the store is down, but the caller chose to serve responses anyway.
      if (settings.failOpen && isIdemError(error, 'STORE_UNAVAILABLE')) {
        settings.warn(
          `Response of ${execution.storageKey} was not recorded: the store is unavailable`,
        );
        return;
      }
      throw error;
    } finally {
      tee?.end(stored);
    }
  }

  // Every end but an outcome to store. Attached readers are ended in this function's
  // `finally` (every return awaits, so it runs once all is settled).
  async function settleOtherwise(): Promise<void> {
    try {
      if (!head) {
        await releaseQuietly();
        throw new Error('ResponseRecorder.start must be called before finish');
      }
      if (!buffer || failedAtEnd) {
        // Answered outside, the handler ran to its end (the adapter knows it: Nest's).
        if (outside && !failedAtEnd) return await answeredOutside();
        // Not the outcome, but the handler still runs (a timeout outside the middleware
        // answered for it, a 503 while it charges a card): released now, a retry would run
        // it beside itself. The key stays held, its lease renewed (up to `maxHoldMs`), until
        // the handler settled; the answer goes out now all the same.
        if (keeping > 0) {
          buffer = undefined;
          const failed = failedAtEnd;
          // A handler that answered this response itself and returned settles within the turn
          // it ended in (its promise resolves in microtasks): its own answer, released. One that
          // runs on past that turn did not answer it (see `answeredOutside`).
          // One ended outside its work (see ENDED_OUTSIDE) is never its own, whenever it settles.
          let ranOn = endedOutside;
          const turn = setTimeout(() => {
            ranOn = true;
          }, 0);
          waitingForHeld = true;
          if (gone && !endedOutside) watchHeld();
          void new Promise<void>((resolve) => {
            idle = resolve;
          }).then(() => {
            clearTimeout(turn);
            clearTimeout(heldSilence);
            waitingForHeld = false;
            // A handler that threw may retry; one that ran to its end most likely did its work.
            // One that wrote to the response after this end reached its own answer: its work ran,
            // even if that write threw (nest33: Express's ERR_HTTP_HEADERS_SENT released the key,
            // and a retry ran the route a second time).
            const ran = (ranOn && !heldFailed) || wroteAfterEnd;
            return ran && !failed ? answeredOutside() : releaseQuietly();
          });
          return;
        }
        return await releaseQuietly();
      }
      return await notRecorded();
    } finally {
      tee?.end(stored);
    }
  }

  // Over the cap: the response went out whole and unrecorded. The operation ran, so the key
  // is not released (a retry would run it again): a final marker takes the outcome's place.
  async function notRecorded(): Promise<void> {
    const limit = settings.maxOutcomeBytes;
    settings.warn(
      `Response of ${execution.storageKey} (${seen} bytes) is over maxOutcomeBytes (${limit}) and was not recorded; retries with its key get a 500 outcome-not-recorded problem`,
    );
    try {
      await execution.completeNotRecorded('too_large', { size: seen, limit });
    } catch {
      // Reported through events; core keeps retrying the marker in the background. The
      // response is unrecorded either way, so it ends normally rather than aborted.
    }
  }

  // A response that is not final was answered while the handler ran (a request-timeout
  // middleware outside the adapter), and the handler then ran to its end without throwing: its
  // side effect most likely happened, but its own result reached no response, so it cannot be
  // recorded. Released, a retry would run it a second time: a final marker instead.
  async function answeredOutside(status = head?.status): Promise<void> {
    buffer = undefined;
    if (execution.finished) return;
    settings.warn(
      `The ${status} response of ${execution.storageKey} was answered outside the idempotency middleware (a request timeout mounted before it?) while its handler ran; the handler then ran to its end, so its outcome is unknown and was not recorded; retries with its key get a 500 outcome-not-recorded problem`,
    );
    try {
      await execution.completeNotRecorded('answered_outside');
    } catch {
      // Reported through events (core retries the marker in the background); the lease runs
      // out if it never lands.
    }
  }

  // The response's trailer fields, before `finish`: the ones its `Trailer` header declared go
  // into the outcome (and count toward its cap); any other is named in a warning, never
  // dropped from replays silently.
  function trailers(fields: readonly (readonly [string, string])[]): void {
    if (!buffer || done || fields.length === 0) return;
    const { recorded, left } = pickRecordedTrailers(fields, declaredTrailers(trailerHeader));
    buffer.trailers(recorded);
    if (left.length > 0) {
      // Named up to a few: a response may add thousands.
      const named =
        left.length > 8
          ? `${left.slice(0, 8).join(', ')} and ${left.length - 8} more`
          : left.join(', ');
      settings.warn(
        `Trailer field(s) ${named} of ${execution.storageKey} were not recorded (not declared in its Trailer header, or never recorded as a trailer); replays go without them`,
      );
    }
  }

  function finish(): Promise<void> {
    clearTimeout(idleTimer);
    done ??= settle();
    return done;
  }

  // A failed release leaves the record in progress until its lease passes (heartbeats stop
  // either way); it is reported through events.
  async function releaseQuietly(): Promise<void> {
    buffer = undefined;
    if (!execution.finished) await execution.release().catch(() => {});
  }

  // An adapter bug must not hold the key: the execution is released, the caller gets the error.
  function misuse(message: string): Error {
    void fail(undefined);
    return new Error(message);
  }

  // Never rejects: after a `finish` that failed there is nothing left to release, and a
  // caller that reports the failure (a drain after the client left) must not raise it again.
  function fail(_error: unknown): Promise<void> {
    clearTimeout(idleTimer);
    tee?.end(false);
    // An answer from outside that broke, its handler having run to its end: marked alike.
    done ??= outside && !failedAtEnd ? answeredOutside() : releaseQuietly();
    return done.catch(() => {});
  }

  // After the client left, a body still producing output keeps its lease (heartbeats go on)
  // and is recorded when it ends. One that stays silent for a whole lease may never end:
  // heartbeats stop then, so the lease lapses by itself and a retry can take over, while a
  // body that ends after all is still recorded if nobody did.
  // Its client gone and past the cap: nothing to record, nobody to answer. The marker now, in
  // place of the one the end would write: never released, never run again.
  let gaveUp = false;
  function giveUp(): void {
    gaveUp = true;
    clearTimeout(idleTimer);
    tee?.end(false);
    done = notRecorded();
  }

  function armIdle(): void {
    clearTimeout(idleTimer);
    idleTimer = setTimeout(() => {
      if (!done && running === 0) execution.abandon();
    }, settings.leaseMs);
    idleTimer.unref?.();
  }

  // Before the head, the handler has not answered yet: it is working, never a stuck body (a
  // client that timed out while a slow call runs). Its lease is renewed as for a client that
  // stays (up to `maxHoldMs`), and the silence watch starts when the head does.
  function clientGone(): void {
    gone = true;
    if (waitingForHeld && !endedOutside) watchHeld();
    if (done || idleTimer !== undefined) return;
    // Past the cap already: the marker now (see GIVE_UP_UNRECORDED), not the silence watch that
    // would free the key of a response that ran for a second run once it went quiet (rev35r).
    if (buffer?.overflowed) giveUp();
    else if (head || unanswered) armIdle();
    else leftEarly = true;
  }

  // A response that is not final ended while held work runs, and its client left: nothing will
  // tell that work its response is over (Node emits no 'finish' for a response closed before
  // its end), so work that awaits it never settles, and waited for, the key stayed held until
  // `maxHoldMs` (node34). Once the work has not settled for a whole lease after that, the key
  // gets the `answered_outside` marker: never released (the work may still run, a retry would
  // run beside it), never a second run.
  function watchHeld(): void {
    clearTimeout(heldSilence);
    heldSilence = setTimeout(() => {
      if (waitingForHeld) void answeredOutside();
    }, settings.leaseMs);
    heldSilence.unref?.();
  }

  // See FAIL_AFTER_HELD: `fail`, but while a handler given to `holdWhile` still runs the key
  // stays held until it settles; then released if it threw, marked if it ran to its end.
  function failAfterHeld(error: unknown): Promise<void> {
    if (done || keeping === 0) return fail(error);
    clearTimeout(idleTimer);
    tee?.end(false);
    buffer = undefined;
    done = new Promise<void>((resolve) => {
      idle = resolve;
    }).then(() => (heldFailed ? releaseQuietly() : answeredOutside()));
    // Not awaited by the caller: the failed request's answer goes out now.
    done.catch(() => {});
    return Promise.resolve();
  }

  function holdWhile(operation: PromiseLike<unknown>, options?: { keepKey?: boolean }): void {
    running += 1;
    const keep = options?.keepKey !== false;
    if (keep) keeping += 1;
    const settled = () => {
      running -= 1;
      if (keep) keeping -= 1;
      if (keeping === 0 && idle) idle();
      // The handler ended: a response its client left is watched for silence from now on.
      if (running === 0 && idleTimer !== undefined && !done) armIdle();
    };
    Promise.resolve(operation).then(settled, () => {
      if (keep) heldFailed = true;
      settled();
    });
  }

  // The internal entry points are in the literal, keyed by their symbols: added after it (the
  // shape this had), every recorder from the third addition on took a map of its own, about 5
  // µs more a request, and its closures were kept through young-generation collections until
  // a full one (1 KB promoted a request; benchmarks/HISTORY.md, nineteenth pass).
  const recorder: ResponseRecorder & {
    [START_FROM]: typeof startFrom;
    [TRAILERS]: typeof trailers;
    [ANSWERED_OUTSIDE]: (status?: number) => Promise<void> | undefined;
    [HELD_AFTER_END]: (wrote?: boolean) => boolean;
    [ENDED_OUTSIDE]: () => void;
    [LEFT_UNANSWERED]: () => void;
    [GIVE_UP_UNRECORDED]: () => boolean;
    [FAIL_AFTER_HELD]: (error: unknown) => Promise<void>;
    [LIVE_GENERATION]: () => number | undefined;
    [LIVE_CAPTURE]: () => Uint8Array | undefined;
  } = {
    context,
    start,
    capture,
    finish,
    fail,
    clientGone,
    holdWhile,
    failAtEnd: () => {
      failedAtEnd = true;
    },
    recordResponse: (response, signal) =>
      recordWebResponse(recorder, response, signal, {
        unavailableRetryAfter: settings.unavailableRetryAfter,
      }),
    lateStart: () => {
      // Judged again at each call before the handler starts (`begin` and then the adapter),
      // never once its response started or the recorder ended (the rev9 review: a late call
      // gave the key back under a handler that was running, renewed). A refusal is answered
      // alike to every later call.
      if (refused || head || done) return refused;
      if (!execution.pastRunway()) return undefined;
      refused = execution
        .refuseLateStart()
        .then(() => storeUnavailable(settings.unavailableRetryAfter));
      return refused;
    },
    [START_FROM]: startFrom,
    [TRAILERS]: trailers,
    [HELD_AFTER_END]: (wrote?: boolean) => {
      // Only while the held work runs: a write once it settled is not its answer (rev33c: the
      // error middleware's `res.status(500).json()` after a route's own 502 and rethrow threw
      // ERR_HTTP_HEADERS_SENT, and the failed route was marked instead of released).
      if (wrote === true && waitingForHeld && keeping > 0) wroteAfterEnd = true;
      return waitingForHeld;
    },
    [ANSWERED_OUTSIDE]: (status?: number) => {
      outside = true;
      if (head) return undefined;
      if (done) return done.catch(() => {});
      // No response the adapter could read (Hono's: the one that went out was consumed):
      // the marker now, in place of `finish`.
      clearTimeout(idleTimer);
      done = answeredOutside(status);
      return done;
    },
    [FAIL_AFTER_HELD]: failAfterHeld,
    [ENDED_OUTSIDE]: () => {
      if (!done) endedOutside = true;
    },
    [GIVE_UP_UNRECORDED]: () => {
      if (gaveUp) return true;
      if (done || !gone || !buffer?.overflowed) return false;
      giveUp();
      return true;
    },
    [LEFT_UNANSWERED]: () => {
      if (done || head) return;
      unanswered = true;
      // Its client left already: the silence counts from now on.
      if (leftEarly && idleTimer === undefined) armIdle();
    },
    [LIVE_GENERATION]: () => tee?.fence,
    [LIVE_CAPTURE]: () => (tee ? buffer?.held() : undefined),
  };
  return recorder;
}

/** An error as a warning names it: its stack (which holds its message) when it has one. */
function describeError(error: unknown): string {
  try {
    if (error instanceof Error) return error.stack ?? `${error.name}: ${error.message}`;
    return `Thrown: ${String(error)}`;
  } catch {
    // A value whose `stack` or `toString` throws: the warning goes out without it.
    return 'Thrown: a value that cannot be printed';
  }
}
