import { isIdemError } from '@idem/core';
import { storeUnavailable } from './answers.js';
import { lightweightBody } from './lightweight-response.js';
import { GENERATION_HEADER, liveCaptureOf, liveGenerationOf } from './live-publish.js';
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
  signal?: AbortSignal | (() => AbortSignal | undefined),
  options: { unavailableRetryAfter?: number } = {},
): Promise<Response> {
  const { start, capture, finish, fail, clientGone } = recorder;
  // @hono/node-server's lightweight response, still holding its whole body: recorded from
  // that body and sent as it is, never made into a Web Response and read as a stream.
  const light = lightweightBody(response);
  if (light) {
    start(response.status, response.headers);
    if (light.body === null) return finishBodiless(recorder, response, options);
    const generation = liveGenerationOf(recorder);
    const init = withGeneration({ status: response.status, headers: response.headers }, generation);
    if (typeof light.body === 'string') {
      // A string cannot change: the response goes out as it is once the outcome is stored.
      const bytes = encoder.encode(light.body);
      return recordWhole(
        recorder,
        [bytes],
        init,
        options,
        generation === undefined ? response : undefined,
      );
    }
    // Bytes are the handler's, and node-server sends them only after the final write: a
    // handler that reuses its buffer (another request meanwhile) would change what goes out.
    // The caller gets a copy taken now, as a Web `Response` would have taken one.
    return recordWhole(recorder, [light.body.slice()], init, options);
  }
  const unusable = unusableResponse(response);
  if (unusable) {
    await fail(undefined);
    throw new TypeError(`recordResponse was given something that ${unusable}`);
  }
  const requestSignal = typeof signal === 'function' ? signal() : signal;
  start(response.status, response.headers);
  if (response.body === null) return finishBodiless(recorder, response, options);
  const reader = response.body.getReader();
  // A live stream names its generation, for a client that resumes it.
  const generation = liveGenerationOf(recorder);
  const init = withGeneration(
    { status: response.status, statusText: response.statusText, headers: response.headers },
    generation,
  );

  // A body that is already whole (a string, bytes, JSON) ends without waiting for anything:
  // it is read ahead and recorded, and the caller gets its bytes, with no stream wrapped
  // around them (on Node, a stream costs more than the rest of the recording).
  const ahead = await readAhead(reader);
  if (ahead.end === 'failed') {
    await fail(ahead.error);
    return failedAnswer(new Response(chunkStream(ahead.chunks, ahead), init));
  }
  if (ahead.end === 'done') return recordWhole(recorder, ahead.chunks, init, options);

  // Still streaming: what was read ahead comes first, then the read under way, each as
  // any later read.
  const early = ahead.chunks;
  let { pending } = ahead;
  const read = (): Promise<ReadableStreamReadResult<unknown>> => {
    const chunk = early.shift();
    if (chunk !== undefined) return Promise.resolve({ done: false, value: chunk });
    const next = pending ?? reader.read();
    pending = undefined;
    return next;
  };
  const held: Uint8Array[] = [];

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
        const { done: ended, value } = await read();
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

  // A published (live) stream is read ahead of the first caller, at the handler's pace:
  // attached readers get each chunk as it is produced whatever the first caller's pace, and
  // the first caller is served from the capture (which holds the whole body anyway, up to
  // the outcome cap). Past the cap, once the lease is lost, or for a stream nobody attaches
  // to (not published), the body is read at the first caller's pace, as below.
  /** Bytes given to the first caller before the body is read at its pace again. */
  const out: Uint8Array[] = [];
  /** The live read-ahead, while it goes on (undefined: read at the first caller's pace). */
  let live: LiveAhead | undefined;
  let gone = false;
  const initial = generation === undefined ? undefined : liveCaptureOf(recorder);
  if (initial) live = startLiveAhead(initial);

  function startLiveAhead(view: Uint8Array): LiveAhead {
    const state: LiveAhead = { view, delivered: 0, sendable: 0, end: 'reading' };
    const lease = recorder.context.signal;
    const stopIfLost = () => {
      if (gone && lease.aborted) void reader.cancel(lease.reason).catch(() => {});
    };
    state.stopIfLost = stopIfLost;
    lease.addEventListener('abort', stopIfLost, { once: true });
    const notify = () => {
      const wake = state.wake;
      state.wake = undefined;
      wake?.();
    };
    // Back to the first caller's pace: what it has not been given yet goes first (without
    // being captured again), the held bytes stay held.
    const handOver = (before: Uint8Array, chunk?: Uint8Array, send?: boolean) => {
      live = undefined;
      lease.removeEventListener('abort', stopIfLost);
      if (state.sendable > state.delivered)
        out.push(before.subarray(state.delivered, state.sendable));
      const rest = before.subarray(state.sendable);
      if (send) {
        if (rest.length > 0) out.push(rest);
        if (chunk) out.push(chunk);
      } else {
        if (rest.length > 0) held.push(rest);
        if (chunk) held.push(chunk);
      }
      notify();
      if (gone) void drain();
    };
    // Takes one chunk read; false when reading ahead stops (past the cap).
    const take = (chunk: Uint8Array): boolean => {
      const before = state.view;
      const send = capture(chunk);
      const after = liveCaptureOf(recorder);
      if (!after) {
        handOver(before, chunk, send);
        return false;
      }
      state.view = after;
      if (send) state.sendable = after.length;
      notify();
      return true;
    };
    void (async () => {
      try {
        for (;;) {
          if (lease.aborted) {
            if (gone) throw lease.reason;
            return handOver(state.view);
          }
          const next = await read();
          if (next.done) break;
          if (!take(toBytes(next.value))) return;
        }
        if (lease.aborted && gone) throw lease.reason;
        lease.removeEventListener('abort', stopIfLost);
        state.end = 'ended';
        state.finished = finish();
        state.finished.catch(() => {});
        notify();
      } catch (error) {
        lease.removeEventListener('abort', stopIfLost);
        state.end = 'failed';
        state.error = error;
        notify();
        await fail(error);
      }
    })();
    return state;
  }

  /** Serves the first caller from the capture while the body is read ahead; false once handed over. */
  async function pullLive(
    state: LiveAhead,
    controller: ReadableStreamDefaultController<Uint8Array>,
  ): Promise<boolean> {
    for (;;) {
      if (live !== state) return false;
      if (state.end === 'failed') {
        controller.error(state.error);
        return true;
      }
      if (state.sendable > state.delivered) {
        controller.enqueue(state.view.subarray(state.delivered, state.sendable));
        state.delivered = state.sendable;
        return true;
      }
      if (state.end === 'ended') {
        try {
          await state.finished;
        } catch (error) {
          controller.error(error);
          return true;
        }
        if (state.view.length > state.delivered)
          controller.enqueue(state.view.subarray(state.delivered));
        controller.close();
        return true;
      }
      await new Promise<void>((resolve) => {
        state.wake = resolve;
      });
    }
  }

  const stream = new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        if (live && (await pullLive(live, controller))) return;
        const before = out.shift();
        if (before !== undefined) return controller.enqueue(before);
        // Loop until something is enqueued or the stream ends: a pull that enqueues
        // nothing (a held chunk) would not be called again.
        for (;;) {
          let next: ReadableStreamReadResult<unknown>;
          try {
            next = await read();
          } catch (error) {
            await fail(error);
            controller.error(error);
            return;
          }
          if (next.done) break;
          const chunk = toBytes(next.value);
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
        gone = true;
        // Read ahead: the body is read to its end already (the read-ahead is the drain).
        if (live) live.stopIfLost?.();
        else void drain();
      },
    },
    { highWaterMark: 0 },
  );
  const wrapped = new Response(stream, init);
  // Some servers neither read nor cancel the body of a response whose client is gone.
  const onAbort = () => {
    clientGone();
    if (!stream.locked) stream.cancel().catch(() => {});
  };
  if (requestSignal?.aborted) onAbort();
  else requestSignal?.addEventListener('abort', onAbort, { once: true });
  return wrapped;
}

/**
 * See {@link answerMustAbort}: each failed answer, with what a server that cannot drop the
 * connection sends instead (undefined: the failed answer itself).
 */
const failedAnswers = new WeakMap<Response, Response | undefined>();

function failedAnswer(response: Response, instead?: Response): Response {
  failedAnswers.set(response, instead);
  return response;
}

/**
 * Whether `response`, as answered by {@link ResponseRecorder.recordResponse}, stands for an
 * execution that failed before any byte of it could be sent: a whole body whose outcome could
 * not be stored (`finish` rejected), or a body that broke while it was read ahead. Its body
 * fails on the first read, after its head went out; a server that can should instead drop
 * the connection without sending anything (a Web adapter on Node: destroy the Node response),
 * so the client sees no status at all, as with the Node adapters, never a 2xx head (some
 * servers even end a body that fails on its first read as an empty, complete one).
 */
export function answerMustAbort(response: Response): boolean {
  return failedAnswers.has(response);
}

/**
 * For a server that cannot drop the connection (Bun, Deno, workers: the runtime sends the
 * head of whatever it is given), what to send in place of a response {@link answerMustAbort}
 * marks: for a whole body whose outcome could not be stored, the store's 503 with
 * Retry-After (the write goes on in the background; a retry with the key replays or runs),
 * never the handler's 2xx head; for a body that broke while read ahead, the broken response
 * itself (its head is the handler's, as without idem). `response` itself when not marked.
 */
export function answerInsteadOfAbort(response: Response): Response {
  return failedAnswers.get(response) ?? response;
}

/** No body (204, 304, HEAD): record first; the response goes out only after that. */
async function finishBodiless(
  recorder: ResponseRecorder,
  response: Response,
  options: { unavailableRetryAfter?: number },
): Promise<Response> {
  try {
    await recorder.finish();
  } catch (error) {
    // Not landed yet (the write goes on in the background, the key stays in progress): the
    // store's failure, answered as one, never a 500 of the framework.
    if (!isIdemError(error, 'STORE_UNAVAILABLE')) throw error;
    return storeUnavailable(options.unavailableRetryAfter ?? 1).response;
  }
  return response;
}

/** `init` with the header naming the generation a live stream is published under, if any. */
function withGeneration(
  init: ResponseInit & { headers: Headers },
  generation: number | undefined,
): ResponseInit & { headers: Headers } {
  if (generation === undefined) return init;
  const headers = new Headers(init.headers);
  headers.set(GENERATION_HEADER, String(generation));
  return { ...init, headers };
}

/**
 * Records a body that is whole already (`chunks`; the recorder is started), then answers
 * `unchanged` if given, else a `Response` of the same bytes with `init`. A failed recording
 * answers a body that breaks: the caller sees the response fail, never complete.
 */
async function recordWhole(
  recorder: ResponseRecorder,
  chunks: Uint8Array[],
  init: ResponseInit,
  options: { unavailableRetryAfter?: number },
  unchanged?: Response,
): Promise<Response> {
  for (const chunk of chunks) recorder.capture(chunk);
  try {
    await recorder.finish();
  } catch (error) {
    const instead = isIdemError(error, 'STORE_UNAVAILABLE')
      ? storeUnavailable(options.unavailableRetryAfter ?? 1).response
      : undefined;
    return failedAnswer(new Response(chunkStream([], { error }), init), instead);
  }
  if (unchanged) return unchanged;
  const [only = new Uint8Array(0)] = chunks;
  if (chunks.length > 1) return new Response(chunkStream(chunks), init);
  return new Response(only as Uint8Array<ArrayBuffer>, bytesInit(init));
}

/**
 * `init` for a body answered as bytes: without the handler's `Transfer-Encoding` (a stream
 * helper's `chunked`), since a server frames bytes with a Content-Length and RFC 9112 (6.1)
 * forbids sending both: a client refuses such a head, and an intermediary that frames by
 * Content-Length would read the chunk framing as the next response.
 */
function bytesInit(init: ResponseInit): ResponseInit {
  const { headers } = init;
  if (!(headers instanceof Headers) || !headers.has('transfer-encoding')) return init;
  const without = new Headers(headers);
  without.delete('transfer-encoding');
  return { ...init, headers: without };
}

/** The state of a live stream read ahead of its first caller. */
interface LiveAhead {
  /** The capture so far (a view: bytes below its length never change). */
  view: Uint8Array;
  /** Bytes of `view` given to the first caller. */
  delivered: number;
  /** Bytes of `view` that may go before the outcome is stored (the rest is held). */
  sendable: number;
  end: 'reading' | 'ended' | 'failed';
  /** With `ended`: the recording of the outcome. */
  finished?: Promise<void>;
  error?: unknown;
  /** The first caller's pull waiting for the next chunk. */
  wake?: () => void;
  /** Cancels the body when the first caller is gone and the lease lost. */
  stopIfLost?: () => void;
}

const encoder = new TextEncoder();
const toBytes = (value: unknown): Uint8Array =>
  typeof value === 'string' ? encoder.encode(value) : (value as Uint8Array);

/** At most this many chunks, and about this many bytes, are read ahead of the caller. */
const AHEAD_CHUNKS = 4;
const AHEAD_BYTES = 65_536;

interface ReadAhead {
  /** What was read, in order. */
  chunks: Uint8Array[];
  /** `done`: the body ended; `failed`: a read failed (`error`); `more`: it goes on. */
  end: 'done' | 'failed' | 'more';
  error?: unknown;
  /** With `more`: the read under way when reading ahead stopped, if any. */
  pending?: Promise<ReadableStreamReadResult<unknown>>;
}

const TURN = Symbol('turn');
const nextTurn: (callback: () => void) => void =
  typeof setImmediate === 'function' ? setImmediate : (callback) => setTimeout(callback, 0);

/**
 * Reads a body until it ends, or until the event loop turns (its producer waits for a
 * timer or for I/O: it streams), or {@link AHEAD_CHUNKS} chunks or {@link AHEAD_BYTES}
 * bytes were read (a long body, even one made without waiting, still streams to its caller,
 * with backpressure).
 */
async function readAhead(reader: ReadableStreamDefaultReader<unknown>): Promise<ReadAhead> {
  const turn = new Promise<typeof TURN>((resolve) => nextTurn(() => resolve(TURN)));
  const chunks: Uint8Array[] = [];
  let bytes = 0;
  while (chunks.length < AHEAD_CHUNKS && bytes < AHEAD_BYTES) {
    const pending = reader.read();
    let result: ReadableStreamReadResult<unknown> | typeof TURN;
    try {
      result = await Promise.race([pending, turn]);
    } catch (error) {
      return { chunks, end: 'failed', error };
    }
    if (result === TURN) {
      // A failure of this read reaches whoever reads it next (nobody, once cancelled).
      pending.catch(() => {});
      return { chunks, end: 'more', pending };
    }
    if (result.done) return { chunks, end: 'done' };
    const chunk = toBytes(result.value);
    chunks.push(chunk);
    bytes += chunk.length;
  }
  return { chunks, end: 'more' };
}

/** A body of `chunks`, in order, that then ends, or fails with `ending.error` when given. */
function chunkStream(
  chunks: Uint8Array[],
  ending?: { error?: unknown },
): ReadableStream<Uint8Array> {
  let index = 0;
  return new ReadableStream<Uint8Array>(
    {
      pull(controller) {
        if (index < chunks.length) return controller.enqueue(chunks[index++] as Uint8Array);
        if (ending) controller.error(ending.error);
        else controller.close();
      },
    },
    { highWaterMark: 0 },
  );
}
