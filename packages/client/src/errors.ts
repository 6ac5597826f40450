import { IdemError, markErrorClass } from '@idem/core';

/**
 * What went wrong in the client. Callers branch on `code`, never on the message text.
 *
 * - `BODY_NOT_REPLAYABLE`: the request body is a one-shot stream larger than
 *   `maxBufferedBodyBytes`, or an already-consumed `Request` body; nothing was sent.
 * - `RETRIES_EXHAUSTED`: every attempt failed without a response (network error or
 *   per-attempt timeout); `cause` is the last attempt's error.
 * - `DEADLINE_EXCEEDED`: the overall deadline passed before a response was obtained; `cause`
 *   is the last attempt's error, if any.
 * - `KEY_NOT_DERIVABLE`: `key: 'content'` was asked for a body whose bytes are not
 *   deterministic (`FormData`), or one too large to encode for the key (past V8's longest
 *   string: about 400 MB of bytes that are not UTF-8, 512 MB of text).
 * - `INVALID_INPUT`: fetch could never send the request (a relative URL, a GET or HEAD with a
 *   body, a forbidden method, a request header undici refuses at dispatch such as `Expect`);
 *   nothing was sent and nothing retried. `cause` is fetch's
 *   `TypeError`. Checked only when the client sends with the global fetch. Also: the `fetch`
 *   option resolved to something that is not a Response (a wrapper without its `return`):
 *   not retried, `cause` a `TypeError` saying what it was (the request may have been sent).
 * - `STREAM_NOT_RESUMABLE`: an event stream broke and could not be resumed where it broke
 *   (the server answered the resume with something other than the rest of the same
 *   generation, e.g. `412` after a takeover, or the resumes ran out); raised by the body's
 *   reader. `cause` is the break or the answer's status.
 */
export type IdemClientErrorCode =
  | 'BODY_NOT_REPLAYABLE'
  | 'RETRIES_EXHAUSTED'
  | 'DEADLINE_EXCEEDED'
  | 'KEY_NOT_DERIVABLE'
  | 'INVALID_INPUT'
  | 'STREAM_NOT_RESUMABLE';

/**
 * Error raised by `@idem/client`: an `IdemError` like every idem error, so one
 * `isIdemError` check covers them all. `cause` carries the underlying error, if any.
 */
export class IdemClientError extends IdemError<IdemClientErrorCode> {
  /** Attempts made before the error, `0` when nothing was sent. */
  readonly attempts: number;
  /**
   * The idempotency key the attempts carried (`RETRIES_EXHAUSTED`, `DEADLINE_EXCEEDED`), when
   * one was sent. The server may have executed the call: to try the same logical call again
   * later, send this key (`'Idempotency-Key': formatKeyHeader(error.key, 'sf-string')`: the key
   * as it is would reach the server as another key when it has a space at either end or starts
   * with a double quote), never a new one.
   */
  readonly key: string | undefined;

  constructor(
    code: IdemClientErrorCode,
    message: string,
    options: { cause?: unknown; attempts?: number; key?: string | undefined } = {},
  ) {
    super(code, message, { cause: options.cause });
    // Named by its own spelling, not by the class's name, which a bundle minified without
    // keepNames changes (as core's errors are named, corerev3): logs, and a failure recorded
    // and replayed, show it. An app's subclass keeps its own name (the corerev4 review).
    if (new.target === IdemClientError) this.name = 'IdemClientError';
    this.attempts = options.attempts ?? 0;
    this.key = options.key;
  }
}

// `instanceof IdemClientError` recognises another copy's (the CommonJS build beside the ES
// module one) by this mark, never an app's class that is only named the same.
markErrorClass(IdemClientError, 'IdemClientError');

/** True when `error` is an {@link IdemClientError}, optionally of the given code. */
export function isIdemClientError(
  error: unknown,
  code?: IdemClientErrorCode,
): error is IdemClientError {
  return error instanceof IdemClientError && (code === undefined || error.code === code);
}
