import { isIdemError } from '@idem/core';
import { storeUnavailable } from './answers.js';
import type { ResponseRecorder } from './recorder.js';

/**
 * Why `value` cannot be sent as a response (it is not a `Response`, its body was read or is
 * locked, or it is `Response.error()`), or undefined when it can. Checked by shape, not by
 * `instanceof`: servers and runtimes bring their own `Response` classes (undici's, the
 * lightweight one of @hono/node-server, another realm's).
 * @internal
 */
export function unusableResponse(value: unknown): string | undefined {
  if (!isResponseLike(value)) {
    return `returned ${value === null ? 'null' : typeof value === 'object' ? 'an object that is not a Response' : typeof value}`;
  }
  if (value.type === 'error' || value.status === 0) return 'returned Response.error()';
  if (value.bodyUsed) return 'returned a Response whose body was already read';
  if (value.body?.locked) return 'returned a Response whose body is locked by a reader';
  return undefined;
}

function isResponseLike(value: unknown): value is Response {
  if (typeof value !== 'object' || value === null) return false;
  const candidate = value as Partial<Response>;
  return (
    typeof candidate.status === 'number' &&
    typeof candidate.headers?.get === 'function' &&
    'body' in candidate &&
    (candidate.body === null || typeof candidate.body?.getReader === 'function')
  );
}

/**
 * {@link ResponseRecorder.recordResponse}: wraps a Web `Response` so that its body is fed to
 * `recorder` while it streams to the caller.
 * @internal
 */
export async function recordWebResponse(
  recorder: ResponseRecorder,
  response: Response,
  signal?: AbortSignal,
  options: { unavailableRetryAfter?: number } = {},
): Promise<Response> {
  const { start, capture, finish, fail, clientGone } = recorder;
  const unusable = unusableResponse(response);
  if (unusable) {
    await fail(undefined);
    throw new TypeError(`recordResponse was given something that ${unusable}`);
  }
  start(response.status, response.headers);
  if (response.body === null) {
    // No body (204, 304, HEAD): record first; the response goes out only after that.
    try {
      await finish();
    } catch (error) {
      // Not landed yet (the write goes on in the background, the key stays in progress): the
      // store's failure, answered as one, never a 500 of the framework.
      if (!isIdemError(error, 'STORE_UNAVAILABLE')) throw error;
      return storeUnavailable(options.unavailableRetryAfter ?? 1).response;
    }
    return response;
  }
  const reader = response.body.getReader();
  const held: Uint8Array[] = [];
  const encoder = new TextEncoder();
  const toBytes = (value: unknown): Uint8Array =>
    typeof value === 'string' ? encoder.encode(value) : (value as Uint8Array);

  // The client went away: keep reading the handler's body so its outcome is still
  // recorded, and a retry gets a replay instead of a second execution. Once the lease is
  // lost (taken over, lapsed after a silence, or maxHoldMs passed) the body can no longer
  // be recorded as ours: it is cancelled, so a body that never ends is not read forever.
  async function drain(): Promise<void> {
    const lease = recorder.context.signal;
    const stop = () => void reader.cancel(lease.reason).catch(() => {});
    if (lease.aborted) stop();
    else lease.addEventListener('abort', stop, { once: true });
    try {
      for (;;) {
        const { done: ended, value } = await reader.read();
        if (lease.aborted) throw lease.reason;
        if (ended) break;
        capture(toBytes(value));
      }
      await finish();
    } catch (error) {
      // Reported through events; nobody is left to tell.
      await fail(error);
    } finally {
      lease.removeEventListener('abort', stop);
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
            for (const before of held.splice(0)) controller.enqueue(before);
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
