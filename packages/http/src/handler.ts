import {
  beginAtOnce,
  createIdempotency,
  type DrainOptions,
  InvalidInputError,
  isIdemError,
  type JsonValue,
} from '@idem/core';
import {
  answerBeginError,
  answerFailure,
  malformedBody,
  outcomeUnreadable,
  respond,
  tooLarge,
} from './answers.js';
import { parseIdempotencyKey } from './key-header.js';
import { callListener } from './listener.js';
import {
  attachDecision,
  generationChanged,
  replayDecision,
  resumeHints,
  unknownEventId,
} from './live-answers.js';
import { resolveLiveStreams } from './live-options.js';
import { BodyPartsLimitError, MalformedBodyError } from './multipart.js';
import { checkHttpOptions, retryAfterSeconds } from './option-checks.js';
import type { HttpIdempotencyOptions } from './options.js';
import { finalOn2xx } from './policy.js';
import { PROBLEM_TYPES } from './problem.js';
import { unusableResponse } from './record-response.js';
import { resolveRecordedHeaders } from './recorded-headers.js';
import { createRecorder, type IdempotencyContext, type ResponseRecorder } from './recorder.js';
import {
  BodyTooLargeError,
  bodyFromBytes,
  type RequestBody,
  readBodyLimited,
} from './request-body.js';
import { fingerprintOf } from './request-fingerprint.js';
import { type RequestTarget, requestTarget } from './request-target.js';
import { canonicalPath } from './route-path.js';
import { createScopeResolver } from './scope.js';

/** A request as an adapter describes it to {@link IdempotencyHandler.begin}. */
export interface IncomingRequest<R> {
  /** The native request, handed to the `scope` and `fingerprint.extras` hooks. */
  native: R;
  method: string;
  /** Absolute URL, or path and query. */
  url: string;
  /**
   * Route pattern when the framework knows it (used for the default operation); without it,
   * the path in one spelling (case, a trailing slash and percent-escapes do not matter).
   */
  route?: string;
  /** One request header's value, or undefined when absent. */
  header(name: string): string | undefined;
  /**
   * Reads the body; MUST throw {@link BodyTooLargeError} past `limit` bytes. Called only for
   * requests that need a key, after the key and scope checks.
   */
  readBody(limit: number): Promise<RequestBody>;
  /** Aborts when the client goes away; stops a bounded wait (`wait`) at once. */
  signal?: AbortSignal;
}

/** What to do with a request, as decided by {@link IdempotencyHandler.begin}. */
export type IdempotencyDecision =
  /**
   * Not subject to idempotency: run the handler as usual. `reason`: the method needs no key,
   * the key is optional and absent, or the store is down and `failOpen` is set.
   */
  | { action: 'pass'; reason: 'method' | 'no-key' | 'fail-open' }
  /** Answer with `response` (a replay or one of the library's own errors); do not run the handler. */
  | { action: 'respond'; response: Response; replayed: boolean }
  /** Run the handler and feed its response to `recorder`. */
  | { action: 'execute'; recorder: ResponseRecorder };

/** The HTTP idempotency layer bound to a store and options. */
export interface IdempotencyHandler<R = Request> {
  /**
   * Wraps a Web handler: checks the key, replays, or runs `next` and records its response
   * while it streams. `next` gets the same request (body unread) and the execution context.
   */
  handle(
    request: Request,
    next: (
      request: Request,
      context: IdempotencyContext | undefined,
    ) => Response | Promise<Response>,
    native?: R,
  ): Promise<Response>;
  /** The lower-level step for framework adapters; see {@link IdempotencyDecision}. */
  begin(request: IncomingRequest<R>): Promise<IdempotencyDecision>;
  /**
   * The answer {@link begin} gives this request from the checks it makes before the `scope`
   * hook: pass (a method that needs no key, an optional key absent), 400 (missing or invalid
   * key, a request target that does not parse); undefined when `begin` would go on to the
   * `scope` hook and the body. Synchronous; runs no hook and reads no body. For an adapter
   * whose framework refused the body (a lower body limit of its own) before `begin` could
   * run: answer this decision where there is one, else the body-too-large problem, as `begin`
   * answers a body past `maxBodyBytes` after these checks (and after the `scope` hook, which
   * may need what the app's later hooks set, so it is not run here).
   */
  beforeScope(
    request: Pick<IncomingRequest<R>, 'method' | 'url' | 'header'>,
  ): IdempotencyDecision | undefined;
  /**
   * The most body bytes {@link begin} reads of a request with this method and headers (the
   * `limit` its `readBody` gets: `maxBodyBytes`), or undefined when it will not read it
   * (the method needs no key, or the request carries none). A number does not promise a read:
   * an invalid key still gets its 400 first. For an adapter that keeps a copy of the body
   * while its framework reads it: nothing to keep when undefined, and never more than this.
   */
  bodyLimit(request: Pick<IncomingRequest<R>, 'method' | 'header'>): number | undefined;
  /**
   * Waits until no final write is being retried in the background (after the store failed
   * while an outcome was recorded), or `timeoutMs` passed; resolves with how many are still
   * pending. Call it at shutdown, after the server stopped taking requests. Also waits for
   * give-backs (releases of keys whose acquire failed, retried up to a lease during a store
   * outage) unless `{ finalWritesOnly: true }`: core's `drain`, whose README says when a
   * give-back cut short is safe (its key waits for its lease, never a second run).
   * @param timeoutMs longest wait @default leaseMs
   */
  drain(timeoutMs?: number, options?: DrainOptions): Promise<number>;
}

const DEFAULT_METHODS = ['POST', 'PATCH'];

/**
 * Creates the HTTP layer. Order of checks for a method that needs a key: key present and
 * valid (400) -> request target parses as a URL (400) -> scope (500 when the hook gives no principal) -> body size (413) -> fingerprint mismatch (422) -> in progress (409
 * with Retry-After, or a bounded wait) -> replay (`Idempotent-Replayed: true`) -> execute.
 * The store down gives 503 with Retry-After unless `failOpen`.
 */
export function createIdempotencyHandler<R = Request>(
  options: HttpIdempotencyOptions<R>,
): IdempotencyHandler<R> {
  checkHttpOptions(options);
  const { isFinal, ...coreOptions } = options;
  const engine = createIdempotency<unknown>(coreOptions);
  const settings = engine.settings;
  const methods = new Set((options.methods ?? DEFAULT_METHODS).map((m) => m.toUpperCase()));
  const required = options.required ?? true;
  const headerName = (options.headerName ?? 'Idempotency-Key').toLowerCase();
  const maxBodyBytes = options.maxBodyBytes ?? 1_048_576;
  if (!(Number.isSafeInteger(maxBodyBytes) && maxBodyBytes >= 0)) {
    throw new InvalidInputError('maxBodyBytes must be a non-negative integer');
  }
  const beginAnswers = {
    failOpen: options.failOpen ?? false,
    unavailableRetryAfter: retryAfterSeconds(
      'unavailableRetryAfterSeconds',
      options.unavailableRetryAfterSeconds,
      1,
    ),
    inProgressRetryAfter: retryAfterSeconds(
      'inProgressRetryAfterSeconds',
      options.inProgressRetryAfterSeconds,
      1,
    ),
  };
  const listener =
    options.onWarning ?? ((message: string) => console.warn(`[@idem/http] ${message}`));
  // A broken warning listener must not change an answer, nor (rejecting) crash the process.
  const warn = (message: string) => callListener(() => listener(message));
  const live = resolveLiveStreams(options.liveStreams, options.store, settings);
  /** Readers attached in this process, per generation (bounded by `maxReaders`). */
  const readers = new Map<string, number>();
  const recorderSettings = {
    ...(live ? { live: live.publish } : {}),
    isFinal: isFinal ?? finalOn2xx,
    recordedHeaders: resolveRecordedHeaders(options.recordedHeaders),
    maxOutcomeBytes: settings.maxOutcomeBytes,
    leaseMs: settings.leaseMs,
    failOpen: options.failOpen ?? false,
    unavailableRetryAfter: beginAnswers.unavailableRetryAfter,
    warn,
  };
  const scopeOf = createScopeResolver<R>(options.scope, warn);

  /**
   * The key of a request whose `method` (upper case) needs one, or begin's answer without it:
   * pass (a method that needs no key, an optional key absent), 400 (missing or invalid key).
   */
  function keyOf(
    request: Pick<IncomingRequest<R>, 'header'>,
    method: string,
  ): string | IdempotencyDecision {
    if (!methods.has(method)) return { action: 'pass', reason: 'method' };
    const field = request.header(headerName);
    if (field === undefined) {
      if (!required) return { action: 'pass', reason: 'no-key' };
      return respond(
        400,
        PROBLEM_TYPES.missingKey,
        'Idempotency-Key required',
        `${method} requests need an Idempotency-Key header`,
      );
    }
    const parsed = parseIdempotencyKey(field);
    if (!parsed.ok)
      return respond(400, PROBLEM_TYPES.invalidKey, 'Invalid Idempotency-Key', parsed.reason);
    return parsed.key;
  }

  async function begin(request: IncomingRequest<R>): Promise<IdempotencyDecision> {
    const method = request.method.toUpperCase();
    const key = keyOf(request, method);
    if (typeof key !== 'string') return key;
    // Before the scope hook and the body: a target the URL parser refuses (`http://a:99999/x`)
    // is the client's error (400), not a TypeError out of begin (500).
    const url = targetOf(request.url);
    if (url === undefined) return invalidTarget();

    // 'global' and the fingerprint without an extras hook answer at once: no promise to wait on.
    const scoped = scopeOf(request.native, method, request.url);
    const hint = scoped instanceof Promise ? await scoped : scoped;
    if (!hint) {
      return respond(
        500,
        PROBLEM_TYPES.noPrincipal,
        'Idempotency scope has no principal',
        'The server could not tell whose request this is; nothing was run or stored',
      );
    }

    const declared = request.header('content-length');
    if (declared !== undefined && Number(declared) > maxBodyBytes) return tooLarge();
    let body: RequestBody;
    try {
      body = await request.readBody(maxBodyBytes);
    } catch (error) {
      if (error instanceof BodyTooLargeError) return tooLarge();
      if (error instanceof BodyPartsLimitError) return tooLarge(error.message);
      if (error instanceof MalformedBodyError) return malformedBody(error.message);
      throw error;
    }

    // Without a matched route (a fetch-style handler), the path in the one spelling routers
    // treat alike: a retry through `o%2D1` for `o-1` must not be another operation.
    const operation = hint.operation ?? `${method} ${request.route ?? canonicalPath(url.pathname)}`;
    // 'global' is the only way to the null principal: a hook's principal is never null.
    const scope: JsonValue = ['idem/http/v1', hint.principal, operation];
    const printed = fingerprintOf(request, method, url, body, options.fingerprint);
    const print = typeof printed === 'string' ? printed : await printed;

    const hints = resumeHints(request.header);
    let begun: Awaited<ReturnType<typeof engine.begin>> | undefined;
    // A duplicate that found the key in progress but no stream to attach to looks at the key
    // once more: the execution may have stored its outcome and dropped its stream between the
    // two reads (then it gets the replay, never a 409 for a stored outcome).
    for (let look = 0; begun === undefined; look++) {
      try {
        // The result itself when the store answered at once: no promise to wait on.
        const answer = beginAtOnce(
          engine,
          { key, scope, fingerprint: print, operation },
          request.signal ? { signal: request.signal } : {},
        );
        begun = answer instanceof Promise ? await answer : answer;
      } catch (error) {
        const attached = await attachDecision(
          error,
          hints,
          live?.attach,
          readers,
          request.header('accept-encoding'),
        );
        if (attached === 'gone' && look === 0) continue;
        if (attached && attached !== 'gone') return attached;
        if (isIdemError(error, 'OUTCOME_CORRUPT'))
          warn(`The outcome recorded for a key cannot be read: ${error.message}`);
        const answer = answerBeginError(error, beginAnswers);
        if (answer) return answer;
        throw error;
      }
    }
    if (begun.kind === 'replay') {
      try {
        const replay = replayDecision(begun.outcome, begun.fence, hints, {
          acceptEncoding: request.header('accept-encoding'),
          origin: request.header('origin') ?? null,
          bound: settings.maxOutcomeBytes,
        });
        // A promise only when the recorded coding is undone for this retry.
        return replay instanceof Promise ? await replay : replay;
      } catch (error) {
        if (!isIdemError(error, 'OUTCOME_CORRUPT')) throw error;
        warn(`The outcome recorded for a key cannot be read: ${error.message}`);
        return outcomeUnreadable();
      }
    }
    // A resume of a generation that is gone never runs the handler: its stream would be
    // spliced onto the one the caller holds.
    if (hints.generation !== undefined) {
      await begun.execution.release().catch(() => {});
      return generationChanged();
    }
    // Likewise a resume after an event (the first execution failed and released the key, or
    // lapsed): no stream carries that event, and a new execution's stream, appended after it
    // (or cut after its own event of that id), would splice two executions.
    if (hints.lastEventId !== undefined) {
      await begun.execution.release().catch(() => {});
      return unknownEventId();
    }
    const recorder = createRecorder(
      key,
      begun.execution,
      recorderSettings,
      request.header('origin') ?? null,
    );
    // The event loop may have been held up since the acquisition was answered (a listener,
    // other callbacks): too late in the lease, the handler would run beside a caller that
    // takes the key over once it passes. Given back, answered 503 (the runrev review). The
    // integrations judge it again where they start the handler (`lateStart`); this one
    // covers an integration that does not.
    const late = recorder.lateStart();
    if (late) return late;
    return { action: 'execute', recorder };
  }

  async function handle(
    request: Request,
    next: (
      request: Request,
      context: IdempotencyContext | undefined,
    ) => Response | Promise<Response>,
    native?: R,
  ): Promise<Response> {
    const decision = await begin({
      native: native ?? (request as unknown as R),
      method: request.method,
      url: request.url,
      header: (name) => request.headers.get(name) ?? undefined,
      signal: request.signal,
      // A clone, so the handler still gets an unread body.
      readBody: async (limit) =>
        bodyFromBytes(
          await readBodyLimited(request.clone().body, limit),
          request.headers.get('content-type'),
        ),
    });
    if (decision.action === 'pass') return next(request, undefined);
    if (decision.action === 'respond') return decision.response;
    const { recorder } = decision;
    // Judged again where the handler starts: `begin` judged it one microtask hop before (the
    // runrev2 review: a task run in that hop held the loop past the lease's runway).
    const late = recorder.lateStart();
    if (late) return (await late).response;
    let response: Response;
    try {
      response = await next(request, recorder.context);
      const unusable = unusableResponse(response);
      if (unusable) throw new TypeError(`The handler ${unusable}, not a Response it can send`);
    } catch (error) {
      return answerFailure(recorder, error, request.signal);
    }
    try {
      return await recorder.recordResponse(response, request.signal);
    } catch (error) {
      // The adapter misused the recorder: never leave the key held. (Not the policy: one
      // that throws makes the response final, see `createRecorder`.)
      await recorder.fail(error);
      throw error;
    }
  }

  function beforeScope(
    request: Pick<IncomingRequest<R>, 'method' | 'url' | 'header'>,
  ): IdempotencyDecision | undefined {
    const key = keyOf(request, request.method.toUpperCase());
    if (typeof key !== 'string') return key;
    return targetOf(request.url) === undefined ? invalidTarget() : undefined;
  }

  function bodyLimit(request: Pick<IncomingRequest<R>, 'method' | 'header'>): number | undefined {
    // Without a key, begin passes or answers 400 before any body is read.
    if (!methods.has(request.method.toUpperCase()) || request.header(headerName) === undefined)
      return undefined;
    return maxBodyBytes;
  }

  return {
    begin,
    handle,
    beforeScope,
    bodyLimit,
    drain: (timeoutMs, drainOptions) => engine.drain(timeoutMs, drainOptions),
  };
}

/** The request target as `begin` reads it, or undefined when the URL parser refuses it. */
function targetOf(url: string): RequestTarget | undefined {
  try {
    return requestTarget(url);
  } catch {
    return undefined;
  }
}

/** 400 before the scope hook: the request target does not parse as a URL. */
function invalidTarget(): IdempotencyDecision {
  return respond(
    400,
    PROBLEM_TYPES.invalidTarget,
    'Invalid request target',
    'The request target does not parse as a URL; nothing was run or stored',
  );
}

/**
 * Wraps a Web handler (`(request) => Response`) with idempotency: the form for Hono,
 * Next.js route handlers, Bun, Deno and workers. The handler receives the execution
 * context (key, fence, abort signal) as its second argument, `undefined` when the request
 * was not subject to idempotency. The returned function carries `drain` (see
 * {@link IdempotencyHandler.drain}) for a server's shutdown.
 */
export function withIdempotency(
  handler: (
    request: Request,
    context: IdempotencyContext | undefined,
  ) => Response | Promise<Response>,
  options: HttpIdempotencyOptions<Request>,
): ((request: Request) => Promise<Response>) & Pick<IdempotencyHandler, 'drain'> {
  const idempotency = createIdempotencyHandler(options);
  return Object.assign((request: Request) => idempotency.handle(request, handler), {
    drain: idempotency.drain,
  });
}
