/**
 * Telling the idempotency server's "still in progress" answer from an application's own 409.
 */

/**
 * The RFC 9457 problem `type` an idem server (`@idem/http` and the integrations built on it)
 * answers with a 409 while the first request with the key still runs. It is stable.
 */
export const IN_PROGRESS_PROBLEM_TYPE = 'https://idem.dev/problems/in-progress';

/** What {@link IdempotentFetchOptions.isInProgress} sees of a 409 answer to a keyed call. */
export interface ConflictAnswer {
  status: number;
  headers: Headers;
  /**
   * The `type` member of an `application/problem+json` body (read from a copy, so the body is
   * left whole for the caller), or `undefined` for any other body or one not readable in time.
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

/**
 * Reads the problem `type` of a response from a clone of its body, leaving the response's own
 * body whole. Gives `undefined` for a body that is not `application/problem+json`, is larger than
 * 16 KiB, is not JSON, or is not read before `signal` aborts (its reading is then cancelled).
 */
export async function readProblemType(
  response: Response,
  signal: AbortSignal,
): Promise<string | undefined> {
  if (!PROBLEM_JSON.test(response.headers.get('content-type') ?? '') || !response.body) {
    return undefined;
  }
  if (signal.aborted) return undefined;
  const reader = (response.clone().body as ReadableStream<Uint8Array>).getReader();
  // Cancelling ends a pending read at once (done), so a stalled body cannot hold the call.
  const onAbort = () => void reader.cancel().catch(() => undefined);
  signal.addEventListener('abort', onAbort, { once: true });
  const decoder = new TextDecoder();
  let text = '';
  let total = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.byteLength;
      if (total > MAX_PROBLEM_BYTES) return undefined;
      text += decoder.decode(value, { stream: true });
    }
    if (signal.aborted) return undefined;
    const parsed: unknown = JSON.parse(text + decoder.decode());
    const type = (parsed as { type?: unknown } | null)?.type;
    return typeof type === 'string' ? type : undefined;
  } catch {
    return undefined;
  } finally {
    signal.removeEventListener('abort', onAbort);
    void reader.cancel().catch(() => undefined);
  }
}

/** Longest wait for a problem body's bytes (less if the attempt limit or deadline is nearer). */
export const PROBLEM_READ_LIMIT_MS = 5_000;
