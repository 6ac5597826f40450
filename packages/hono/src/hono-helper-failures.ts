import { SSEStreamingApi } from 'hono/streaming';

/**
 * Hono's own stream helpers (`streamSSE`, `stream`, `streamText` of `hono/streaming`) catch a
 * throw of their callback and, without an `onError`, hand it to `console.error`, then close
 * the stream in the same synchronous step (`catch { console.error(e) } finally { stream.close() }`):
 * the body ends as on success. That pair is the only trace of the failure, and it is exact:
 * a `console.error` whose caller is the helper's own code, followed before any other job runs
 * by a helper stream's `close`, is that stream's callback failing. Seen so, the stream's body
 * is told failed (see {@link watchHelperBody}), so a middleware does not record it.
 *
 * What is watched: `close` on the prototype of Hono's `StreamingApi` (the one this module's
 * `hono/streaming` resolves to), and `console.error`. Installed once, when a middleware is made;
 * nothing runs per request until a helper's callback fails. Not seen (the stream is recorded,
 * as before): a throw handed to an `onError` (it is the app's then), a Hono bundled so its
 * file names are lost, another copy of Hono than this module's, and a `console.error`
 * replaced later by one that does not call the one it replaced.
 */

/** A helper stream, as far as it is read here. */
interface HelperStream {
  responseReadable?: unknown;
  close(): Promise<void>;
}

/** Bodies of helper streams whose callback threw before a middleware watched them. */
const failedBodies = new WeakSet<object>();
/** What to do when the helper of a body a middleware watches fails. */
const watchers = new WeakMap<object, () => void>();
/** A helper's `console.error` was just seen: its `close` comes next, in the same step. */
let failing = false;
let installed = false;
/** The `console.error` this module put in place. */
let watchedError: ((...args: unknown[]) => unknown) | undefined;

/** The helper's code, as the first frame of a stack names it (ESM, CJS, JSR sources). */
const HELPER_FRAME = /[\\/]helper[\\/]streaming[\\/](?:sse|stream)\.[cm]?[jt]s\b/;

/** Whether the function that called `errorWatcher` is code of a Hono stream helper. */
function calledByHelper(errorWatcher: (...args: unknown[]) => unknown): boolean {
  const capture = (Error as { captureStackTrace?: (target: object, above: unknown) => void })
    .captureStackTrace;
  if (typeof capture !== 'function') return false;
  const limit = Error.stackTraceLimit;
  const holder: { stack?: unknown } = {};
  try {
    // A few frames: V8 counts the ones it leaves out (`errorWatcher`) against the limit at
    // times (an async function resumed by a rejection).
    Error.stackTraceLimit = 3;
    capture(holder, errorWatcher);
  } catch {
    return false;
  } finally {
    Error.stackTraceLimit = limit;
  }
  if (typeof holder.stack !== 'string') return false;
  // The caller only: a frame deeper down (the helper that called the app's callback, which
  // logged something itself) is not the helper's catch.
  const first = holder.stack.indexOf('\n');
  if (first === -1) return false;
  const end = holder.stack.indexOf('\n', first + 1);
  return HELPER_FRAME.test(holder.stack.slice(first + 1, end === -1 ? undefined : end));
}

/** Puts a `console.error` in place that notes a helper's catch, then does what the last one did. */
function watchConsoleError(): void {
  const previous = console.error;
  const errorWatcher = function (this: unknown, ...args: unknown[]): unknown {
    if (!failing && calledByHelper(errorWatcher)) {
      failing = true;
      // Never left standing past this step: the helper's `close` comes before any other job.
      queueMicrotask(() => {
        failing = false;
      });
    }
    return previous.apply(this, args);
  };
  try {
    console.error = errorWatcher;
    watchedError = errorWatcher;
  } catch {
    // A console that cannot be changed: nothing is seen.
  }
}

/** Watches `console.error` again when it was replaced since (a logger, a test). */
function rewatchConsoleError(): void {
  if (watchedError !== undefined && console.error !== watchedError) watchConsoleError();
}

/** Wraps the `close` of Hono's `StreamingApi` and `console.error` (once a module copy). */
export function watchHelperFailures(): void {
  if (installed) {
    rewatchConsoleError();
    return;
  }
  installed = true;
  const proto = Object.getPrototypeOf(SSEStreamingApi.prototype) as HelperStream | null;
  const close = proto?.close;
  if (!proto || typeof close !== 'function') return;
  proto.close = function closeWatched(this: HelperStream): Promise<void> {
    if (failing) {
      failing = false;
      const body = this.responseReadable;
      if (typeof body === 'object' && body !== null) {
        const watcher = watchers.get(body);
        if (watcher) {
          watchers.delete(body);
          watcher();
        } else failedBodies.add(body);
      }
    }
    return close.call(this);
  };
  watchConsoleError();
}

/**
 * Has `onFailure` called when the helper stream whose body is `body` (a response made by Hono's
 * own `streamSSE` or `streamText`) turns out to have failed (see {@link watchHelperFailures}),
 * or at once when it already has (a callback that threw before the middleware saw its
 * response). A `console.error` replaced since it was watched is watched again (here, and when
 * a middleware is made).
 */
export function watchHelperBody(body: unknown, onFailure: () => void): void {
  if (!installed || typeof body !== 'object' || body === null) return;
  rewatchConsoleError();
  if (failedBodies.has(body)) {
    failedBodies.delete(body);
    onFailure();
  } else watchers.set(body, onFailure);
}
