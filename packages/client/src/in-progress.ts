/**
 * Telling the idempotency server's "still in progress" answer from an application's own 409.
 */

import { boundSignal } from './call-bounds.js';
import { withIdentityOf } from './response-identity.js';

/**
 * The RFC 9457 problem `type` an idem server (`@idem/http` and the integrations built on it)
 * answers with a 409 while the first request with the key still runs. It is stable.
 */
export const IN_PROGRESS_PROBLEM_TYPE = 'https://idem.dev/problems/in-progress';

/**
 * Problem types an idem server answers with a 5xx that the same key would get again: the first
 * request ran but its response could not be recorded, or the server's scope hook gave no
 * principal. Retrying them spends attempts for the same answer, so they go back at once.
 */
export const FINAL_PROBLEM_TYPES: ReadonlySet<string> = new Set([
  'https://idem.dev/problems/outcome-not-recorded',
  'https://idem.dev/problems/no-principal',
]);

/** What {@link IdempotentFetchOptions.isInProgress} sees of a 409 answer to a keyed call. */
export interface ConflictAnswer {
  status: number;
  headers: Headers;
  /**
   * The `type` member of an `application/problem+json` body (its first 16 KiB; the caller still
   * gets the whole body), or `undefined` for any other body or one not readable in time.
   */
  problemType: string | undefined;
}

/**
 * The default in-progress test: a 409 whose problem type is {@link IN_PROGRESS_PROBLEM_TYPE}.
 * A plain 409, with or without `Retry-After`, is the application's answer and is final.
 */
export function isInProgressAnswer(answer: ConflictAnswer): boolean {
  return answer.status === 409 && answer.problemType === IN_PROGRESS_PROBLEM_TYPE;
}

const PROBLEM_JSON = /^\s*application\/problem\+json\s*(;|$)/i;
/** A problem body longer than this is no idem answer: not read further. */
const MAX_PROBLEM_BYTES = 16 * 1024;

type Read = ReadableStreamReadResult<Uint8Array>;

/** What was read of a body before {@link peekProblem} stopped, and how it stopped. */
interface Peeked {
  reader: ReadableStreamDefaultReader<Uint8Array>;
  head: Uint8Array[];
  /** A read still under way when the reading stopped (time ran out). */
  pending: Promise<Read> | undefined;
  complete: boolean;
  failure?: { error: unknown };
}

/**
 * A response like `original` whose body is what was read, then the rest of the original body.
 * `url`, `redirected` and `type` are copied: fetch's own response has them, `new Response` not.
 */
function rebuild(original: Response, peeked: Peeked): Response {
  const { reader, head, complete, failure } = peeked;
  let { pending } = peeked;
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      const next = head.shift();
      if (next) controller.enqueue(next);
      else if (failure) controller.error(failure.error);
      else if (complete) controller.close();
      else {
        const read = pending ?? reader.read();
        pending = undefined;
        const { done, value } = await read;
        if (done) controller.close();
        else controller.enqueue(value);
      }
    },
    cancel: (reason) => reader.cancel(reason),
  });
  const copy = new Response(body, {
    status: original.status,
    statusText: original.statusText,
    headers: original.headers,
  });
  return withIdentityOf(copy, original);
}

function problemTypeOf(head: Uint8Array[]): string | undefined {
  const decoder = new TextDecoder();
  const text = head.map((chunk) => decoder.decode(chunk, { stream: true })).join('');
  try {
    const parsed: unknown = JSON.parse(text + decoder.decode());
    const type = (parsed as { type?: unknown } | null)?.type;
    return typeof type === 'string' ? type : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Reads the problem `type` of a response: the first 16 KiB of an `application/problem+json`
 * body at most, and only until `signal` aborts (a stalled body cannot hold the call). Gives the
 * type (`undefined` for another body, one larger than 16 KiB, not JSON or not read in time) and
 * the response to hand on: the same one when nothing was read, else a copy whose body is the
 * whole original body, bytes read included, so the caller loses nothing.
 *
 * Not `response.clone()`: with undici, a clone branch cancelled while the other is unread makes a
 * later abort of the fetch an unhandled rejection, and one left uncancelled makes the caller's
 * `body.cancel()` wait forever.
 */
export async function peekProblem(
  response: Response,
  signal: AbortSignal,
): Promise<{ problemType: string | undefined; response: Response }> {
  const type = response.headers.get('content-type') ?? '';
  // A body a custom fetch handed over already read or locked is left as it is.
  if (!PROBLEM_JSON.test(type) || !response.body || response.body.locked || signal.aborted) {
    return { problemType: undefined, response };
  }
  const peeked: Peeked = {
    reader: response.body.getReader(),
    head: [],
    pending: undefined,
    complete: false,
  };
  let onAbort: () => void = () => undefined;
  const stopped = new Promise<'stopped'>((resolve) => {
    onAbort = () => resolve('stopped');
  });
  signal.addEventListener('abort', onAbort, { once: true });
  let total = 0;
  try {
    while (total <= MAX_PROBLEM_BYTES) {
      peeked.pending = peeked.reader.read();
      const result = await Promise.race([peeked.pending, stopped]);
      if (result === 'stopped') break;
      peeked.pending = undefined;
      if (result.done) {
        peeked.complete = true;
        break;
      }
      peeked.head.push(result.value);
      total += result.value.byteLength;
    }
  } catch (error) {
    peeked.failure = { error };
    peeked.pending = undefined;
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
  // Handled here too: nobody may ever pull the copy's body.
  peeked.pending?.catch(() => undefined);
  const problemType = peeked.complete ? problemTypeOf(peeked.head) : undefined;
  return { problemType, response: rebuild(response, peeked) };
}

/** Longest wait for a problem body's bytes (less if the attempt limit or deadline is nearer). */
export const PROBLEM_READ_LIMIT_MS = 5_000;

/**
 * Whether a 409 answer is the idempotency server's "in progress", by `isInProgress` over its
 * problem type read within `limitMs` and the caller's signal; with the response to hand on in
 * its place (its body whole). Throws the caller's abort reason if it aborts meanwhile.
 */
export async function classifyConflict(
  answer: Response,
  options: {
    callerSignal: AbortSignal | undefined;
    limitMs: number;
    isInProgress: (answer: ConflictAnswer) => boolean;
  },
): Promise<{ inProgress: boolean; response: Response }> {
  const { callerSignal } = options;
  const read = boundSignal(callerSignal, options.limitMs, 'Reading the problem body');
  let peeked: Awaited<ReturnType<typeof peekProblem>>;
  try {
    peeked = await peekProblem(answer, read.signal);
  } finally {
    read.dispose();
  }
  const { problemType, response } = peeked;
  try {
    callerSignal?.throwIfAborted();
    const { status, headers } = response;
    return { inProgress: options.isInProgress({ status, headers, problemType }), response };
  } catch (error) {
    // Nobody will read this body: let the connection go.
    response.body?.cancel().catch(() => undefined);
    throw error;
  }
}
