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
 * `hono/streaming` resolves to), and `console.error`. Installed once a process (the copies of
 * this module share one watch), when a middleware is made; per request, one comparison (is
 * the watcher still on top of `console.error`?) until a helper's callback fails. Not seen
 * (the stream is recorded, as before): a throw handed to an `onError` (it is the app's then),
 * a Hono bundled so its file names are lost, another copy of Hono than this module's, and a
 * `console.error` replaced while the route runs by one that does not call the one it replaced.
 */

/** A helper stream, as far as it is read here. */
interface HelperStream {
  responseReadable?: unknown;
  close(): Promise<void>;
}

/**
 * What the watch shares with every other copy of this module in the process (the ESM and CJS
 * builds, two installs): one `console.error` watcher, one flag, one set of watched bodies. Per
 * copy, each copy on top of the other's watcher would take it for a logger put there since
 * and wrap it again, on every middleware made and every helper response: a chain of watchers
 * growing for as long as the process lives.
 */
interface WatchState {
  /** Bodies of helper streams whose callback threw before a middleware watched them. */
  failedBodies: WeakSet<object>;
  /** What to do when the helper of a body a middleware watches fails. */
  watchers: WeakMap<object, () => void>;
  /** A helper's `console.error` was just seen: its `close` comes next, in the same step. */
  failing: boolean;
  /** The `console.error` put in place last (by any copy). */
  watchedError: ((...args: unknown[]) => unknown) | undefined;
  /** The `StreamingApi` prototypes whose `close` is wrapped (one a copy of Hono). */
  wrapped: WeakSet<object>;
}

const STATE = Symbol.for('idem.hono.helperFailures');

function sharedState(): WatchState {
  const global = globalThis as { [STATE]?: WatchState };
  let found = global[STATE];
  if (!found) {
    found = {
      failedBodies: new WeakSet(),
      watchers: new WeakMap(),
      failing: false,
      watchedError: undefined,
      wrapped: new WeakSet(),
    };
    global[STATE] = found;
  }
  return found;
}

const state = sharedState();
/** Whether this copy's Hono stream prototype is wrapped. */
let installed = false;

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
    if (!state.failing && calledByHelper(errorWatcher)) {
      state.failing = true;
      // Never left standing past this step: the helper's `close` comes before any other job.
      queueMicrotask(() => {
        state.failing = false;
      });
    }
    return previous.apply(this, args);
  };
  try {
    console.error = errorWatcher;
    state.watchedError = errorWatcher;
  } catch {
    // A console that cannot be changed: nothing is seen.
  }
}

/**
 * Watches `console.error` again when it was replaced since (a logger, a test): the watcher is
 * put back on top, so Hono's helper is its caller. Also called by a middleware before the
 * route runs (one comparison): a callback that throws before its first await is logged
 * before the middleware sees its response.
 */
export function rewatchConsoleError(): void {
  if (state.watchedError !== undefined && console.error !== state.watchedError) watchConsoleError();
}

/**
 * Wraps the `close` of Hono's `StreamingApi` (once a copy of Hono) and `console.error` (once a
 * process; again when something replaced it since).
 */
export function watchHelperFailures(): void {
  if (!installed) {
    installed = true;
    wrapClose();
  }
  if (state.watchedError === undefined) watchConsoleError();
  else rewatchConsoleError();
}

/** Wraps the `close` of the `StreamingApi` of this copy's Hono, unless another copy did. */
function wrapClose(): void {
  const proto = Object.getPrototypeOf(SSEStreamingApi.prototype) as HelperStream | null;
  const close = proto?.close;
  if (!proto || typeof close !== 'function' || state.wrapped.has(proto)) return;
  state.wrapped.add(proto);
  proto.close = function closeWatched(this: HelperStream): Promise<void> {
    if (state.failing) {
      state.failing = false;
      const body = this.responseReadable;
      if (typeof body === 'object' && body !== null) {
        const watcher = state.watchers.get(body);
        if (watcher) {
          state.watchers.delete(body);
          watcher();
        } else state.failedBodies.add(body);
      }
    }
    return close.call(this);
  };
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
  if (state.failedBodies.has(body)) {
    state.failedBodies.delete(body);
    onFailure();
  } else state.watchers.set(body, onFailure);
}
