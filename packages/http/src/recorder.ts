import { type Execution, isIdemError, type StoredOutcome } from '@idem/core';
import type { ResponsePolicy } from './policy.js';
import { pickRecordedHeaders } from './recorded-headers.js';

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
 * complete one.
 */
export interface ResponseRecorder {
  /** What the handler may use: key, fence, abort signal. */
  readonly context: IdempotencyContext;
  /** Declares status and headers (once); returns whether the response will be recorded. */
  start(status: number, headers: Headers): boolean;
  /**
   * Takes the next body chunk. Returns true when the caller may send it now, false when it
   * MUST hold it until `finish` resolves (the last bytes of a body of known length).
   */
  capture(chunk: Uint8Array): boolean;
  /** The body ended: records the outcome (or releases the key); see the guarantees above. */
  finish(): Promise<void>;
  /** The handler failed or its body broke: releases the key so a retry executes again. */
  fail(error: unknown): Promise<void>;
  /**
   * The client went away before the end. The body is still read and recorded when it ends;
   * heartbeats go on while it keeps producing output, and stop once it has been silent for a
   * whole lease, so a handler that stopped writing frees the key within two leases, never
   * holding it for `maxHoldMs`.
   */
  clientGone(): void;
  /**
   * Wraps a Web `Response` so its body is recorded while it streams to the caller; the
   * returned body ends (or errors) only after `finish` settled. `signal` is the request's:
   * when it aborts (the client went away), the body is read to its end and recorded
   * without a reader (see `clientGone`).
   */
  recordResponse(response: Response, signal?: AbortSignal): Promise<Response>;
}

interface RecorderSettings {
  isFinal: ResponsePolicy;
  recordedHeaders: ReadonlySet<string>;
  maxOutcomeBytes: number | undefined;
  leaseMs: number;
  failOpen: boolean;
  warn: (message: string) => void;
}

/**
 * Why `value` cannot be sent as a response (it is not a `Response`, its body was read or is
 * locked, or it is `Response.error()`), or undefined when it can.
 * @internal
 */
export function unusableResponse(value: unknown): string | undefined {
  if (!(value instanceof Response)) {
    return `returned ${value === null ? 'null' : typeof value === 'object' ? 'an object' : typeof value}`;
  }
  if (value.type === 'error' || value.status === 0) return 'returned Response.error()';
  if (value.bodyUsed) return 'returned a Response whose body was already read';
  if (value.body?.locked) return 'returned a Response whose body is locked by a reader';
  return undefined;
}

/** @internal */
export function createRecorder(
  key: string,
  execution: Execution,
  settings: RecorderSettings,
): ResponseRecorder {
  const context: IdempotencyContext = {
    key,
    storageKey: execution.storageKey,
    fence: execution.fence,
    signal: execution.signal,
  };
  let head: { status: number; headers: [string, string][] } | undefined;
  let final = false;
  let expectedLength: number | undefined;
  let seen = 0;
  let tooLarge = false;
  const chunks: Uint8Array[] = [];
  let done: Promise<void> | undefined;

  function start(status: number, headers: Headers): boolean {
    if (head) return final;
    // A policy that throws is a failure of ours after acquisition: the caller releases.
    final = settings.isFinal({ status, headers });
    head = { status, headers: pickRecordedHeaders(headers, settings.recordedHeaders) };
    const length = headers.get('content-length');
    if (length !== null && /^\d+$/.test(length.trim())) expectedLength = Number(length);
    return final;
  }

  let idleTimer: ReturnType<typeof setTimeout> | undefined;

  function capture(chunk: Uint8Array): boolean {
    if (!head) throw misuse('ResponseRecorder.start must be called before capture');
    if (idleTimer !== undefined) armIdle();
    if (chunk.length === 0) return true;
    seen += chunk.length;
    if (final && !tooLarge) {
      // A copy: the caller may reuse its buffer after sending it.
      chunks.push(chunk.slice());
      if (settings.maxOutcomeBytes !== undefined && seen > settings.maxOutcomeBytes) {
        tooLarge = true;
        chunks.length = 0;
      }
    }
    return expectedLength === undefined || seen < expectedLength;
  }

  async function settle(): Promise<void> {
    if (!head) {
      await releaseQuietly();
      throw new Error('ResponseRecorder.start must be called before finish');
    }
    if (!final || tooLarge) {
      if (tooLarge)
        settings.warn(
          `Response of ${execution.storageKey} is too large for the store; not recorded`,
        );
      await releaseQuietly();
      return;
    }
    const body = new Uint8Array(seen);
    let offset = 0;
    for (const chunk of chunks) {
      body.set(chunk, offset);
      offset += chunk.length;
    }
    const outcome: StoredOutcome = {
      meta: {
        format: OUTCOME_FORMAT,
        status: head.status,
        headers: head.headers,
        chunks: chunks.map((c) => c.length),
      },
      body,
    };
    try {
      await execution.complete(outcome);
    } catch (error) {
      // Released by core: the response may still finish; a retry executes again.
      if (isIdemError(error, 'OUTCOME_TOO_LARGE')) {
        settings.warn(
          `Response of ${execution.storageKey} is too large for the store; not recorded`,
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
    if (!execution.finished) await execution.release().catch(() => {});
  }

  // An adapter bug must not hold the key: the execution is released, the caller gets the error.
  function misuse(message: string): Error {
    void fail(undefined);
    return new Error(message);
  }

  function fail(_error: unknown): Promise<void> {
    clearTimeout(idleTimer);
    done ??= releaseQuietly();
    return done;
  }

  // After the client left, a body still producing output keeps its lease (heartbeats go on)
  // and is recorded when it ends. One that stays silent for a whole lease may never end:
  // heartbeats stop then, so the lease lapses by itself and a retry can take over, while a
  // body that ends after all is still recorded if nobody did.
  function armIdle(): void {
    clearTimeout(idleTimer);
    idleTimer = setTimeout(() => {
      if (!done) execution.abandon();
    }, settings.leaseMs);
    idleTimer.unref?.();
  }

  function clientGone(): void {
    if (!done && idleTimer === undefined) armIdle();
  }

  async function recordResponse(response: Response, signal?: AbortSignal): Promise<Response> {
    const unusable = unusableResponse(response);
    if (unusable) {
      await fail(undefined);
      throw new TypeError(`recordResponse was given something that ${unusable}`);
    }
    start(response.status, response.headers);
    if (response.body === null) {
      // No body (204, 304, HEAD): record first; the response goes out only after that.
      await finish();
      return response;
    }
    const reader = response.body.getReader();
    const held: Uint8Array[] = [];
    const encoder = new TextEncoder();
    const toBytes = (value: unknown): Uint8Array =>
      typeof value === 'string' ? encoder.encode(value) : (value as Uint8Array);

    // The client went away: keep reading the handler's body so its outcome is still
    // recorded, and a retry gets a replay instead of a second execution.
    async function drain(): Promise<void> {
      try {
        for (;;) {
          const { done: ended, value } = await reader.read();
          if (ended) break;
          capture(toBytes(value));
        }
        await finish();
      } catch (error) {
        await fail(error);
      }
    }

    const stream = new ReadableStream<Uint8Array>(
      {
        async pull(controller) {
          // Loop until something is enqueued or the stream ends: a pull that enqueues
          // nothing (a held chunk) would not be called again.
          for (;;) {
            let read: ReadableStreamReadResult<Uint8Array>;
            try {
              read = await reader.read();
            } catch (error) {
              await fail(error);
              controller.error(error);
              return;
            }
            if (read.done) break;
            const chunk = toBytes(read.value);
            if (capture(chunk)) {
              controller.enqueue(chunk);
              return;
            }
            held.push(chunk);
          }
          try {
            await finish();
          } catch (error) {
            controller.error(error);
            return;
          }
          for (const chunk of held) controller.enqueue(chunk);
          controller.close();
        },
        cancel() {
          clientGone();
          void drain();
        },
      },
      { highWaterMark: 0 },
    );
    const wrapped = new Response(stream, {
      status: response.status,
      statusText: response.statusText,
      headers: response.headers,
    });
    // Some servers neither read nor cancel the body of a response whose client is gone.
    const onAbort = () => {
      clientGone();
      if (!stream.locked) stream.cancel().catch(() => {});
    };
    if (signal?.aborted) onAbort();
    else signal?.addEventListener('abort', onAbort, { once: true });
    return wrapped;
  }

  return { context, start, capture, finish, fail, clientGone, recordResponse };
}
