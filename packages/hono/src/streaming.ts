import type { Context } from 'hono';
import {
  stream as honoStream,
  streamSSE as honoStreamSSE,
  streamText as honoStreamText,
} from 'hono/streaming';
import { failedExecution, markIdemHelper } from './hono-middleware.js';

/**
 * The callback of a stream helper, such that a throw marks the execution failed before Hono's
 * helper catches it (and hands it to `onError` or logs it) and ends the body normally: the
 * response is then not recorded and the key is released when the body ends, so a retry runs
 * the work again instead of replaying a stream cut short.
 */
function failing<S>(c: Context, cb: (stream: S) => Promise<void>): (stream: S) => Promise<void> {
  // Told apart from Hono's own helpers, which the middleware warns about.
  markIdemHelper(c);
  return async (stream) => {
    try {
      await cb(stream);
    } catch (error) {
      failedExecution(c);
      throw error;
    }
  };
}

/**
 * Hono's `streamSSE` (same arguments, same response), for routes behind `idempotency()`:
 * when the callback throws, the stream is not recorded (Hono's helper would end it normally,
 * and it would be replayed cut short) and the key is released once the body ends (after
 * `onError`), so a retry runs again. What
 * the first client gets is Hono's: `onError`'s output (and an `error` event), then the end.
 */
export const streamSSE: typeof honoStreamSSE = (c, cb, onError) =>
  honoStreamSSE(c, failing(c, cb), onError);

/** Hono's `stream`, with a throw of the callback not recorded (see {@link streamSSE}). */
export const stream: typeof honoStream = (c, cb, onError) => honoStream(c, failing(c, cb), onError);

/** Hono's `streamText`, with a throw of the callback not recorded (see {@link streamSSE}). */
export const streamText: typeof honoStreamText = (c, cb, onError) =>
  honoStreamText(c, failing(c, cb), onError);
