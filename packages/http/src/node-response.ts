import type { IncomingHttpHeaders, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { ResponseRecorder } from './recorder.js';

type Chunk = string | Uint8Array;
type Callback = (error?: Error | null) => void;

function toBuffer(chunk: Chunk, encoding?: BufferEncoding): Buffer {
  return typeof chunk === 'string' ? Buffer.from(chunk, encoding ?? 'utf8') : Buffer.from(chunk);
}

/** Node's outgoing headers (plus any passed to `writeHead`) as a Web `Headers`. */
export function headersOf(res: ServerResponse, extra?: unknown): Headers {
  const headers = new Headers();
  const add = (name: string, value: unknown) => {
    if (value === undefined || value === null) return;
    for (const item of Array.isArray(value) ? value : [value]) headers.append(name, String(item));
  };
  for (const [name, value] of Object.entries(res.getHeaders() as OutgoingHttpHeaders))
    add(name, value);
  if (Array.isArray(extra)) {
    // writeHead(status, [name, value, name, value, ...]) or [[name, value], ...]
    const flat = extra.flat() as unknown[];
    for (let i = 0; i + 1 < flat.length; i += 2) headers.set(String(flat[i]), String(flat[i + 1]));
  } else if (extra && typeof extra === 'object') {
    for (const [name, value] of Object.entries(extra)) {
      headers.delete(name);
      add(name, value);
    }
  }
  return headers;
}

/**
 * Makes `object[name]` read false while `hidden()` is true, and as before otherwise, whether
 * it is an own value (set by Node on the instance) or an accessor further up the chain.
 */
function readFalseWhile(object: object, name: string, hidden: () => boolean): void {
  let owner: object | null = object;
  let descriptor: PropertyDescriptor | undefined;
  while (owner && !descriptor) {
    descriptor = Object.getOwnPropertyDescriptor(owner, name);
    owner = Object.getPrototypeOf(owner);
  }
  const { get, set } = descriptor ?? {};
  let value: unknown = descriptor?.value;
  Object.defineProperty(object, name, {
    configurable: true,
    enumerable: true,
    get: () => !hidden() && (get ? get.call(object) : value),
    set: (next: unknown) => {
      if (set) set.call(object, next);
      else value = next;
    },
  });
}

/** Options of {@link recordServerResponse}. */
export interface RecordServerResponseOptions {
  /**
   * Whether the response, once its status is known, is the outcome of the handler the key
   * guards. When it answers false (e.g. a body parser's 400 written before any route ran), the
   * key is released and the response passes through unrecorded, under every policy.
   * @default every response is
   */
  isHandlerOutcome?: (status: number) => boolean;
}

/**
 * Feeds everything the app writes to `res` into `recorder` while it goes out: chunks pass
 * through live; the end of the response (and the last bytes of a body of known length) is
 * held until the outcome is recorded; when recording fails the response is destroyed
 * instead of ended, and a response the app destroys releases the key.
 *
 * When the client goes away before the end, the app does not learn it yet: `res` stays
 * writable (every write is taken and recorded, `destroyed` and `closed` read false, a
 * writer waiting for `'drain'` gets it) and its `'close'` event is held back until the app
 * ends or destroys the response, or the execution's lease is lost. So a `stream.pipeline`,
 * a `pipe` or a framework streaming a payload reads its source to the end, the outcome is
 * recorded once, and a retry replays it instead of running the handler again.
 */
export function recordServerResponse(
  res: ServerResponse,
  recorder: ResponseRecorder,
  options: RecordServerResponseOptions = {},
): void {
  type Loose = (...args: unknown[]) => unknown;
  const original = {
    writeHead: res.writeHead.bind(res) as Loose,
    write: res.write.bind(res) as Loose,
    end: res.end.bind(res) as Loose,
    destroy: res.destroy.bind(res) as Loose,
    emit: res.emit.bind(res) as (event: string | symbol, ...args: unknown[]) => boolean,
  };
  const held: Buffer[] = [];
  /** Writes the app made after `end`, passed on after the real end so Node refuses them. */
  const late: [Chunk, BufferEncoding | Callback | undefined, Callback | undefined][] = [];
  let started = false;
  /** The policy made the response final: it is recorded when it ends. */
  let recording = false;
  /** Not the handler's outcome: released, everything passes through untouched. */
  let bypass = false;
  let ending = false;
  let destroying = false;
  /** The client left; the app still writes to a sink that only records. */
  let gone = false;
  /** The held-back `'close'` was emitted: `res` shows its real (destroyed) state again. */
  let closeReleased = false;

  const start = (extra?: unknown) => {
    if (started) return;
    started = true;
    if (options.isHandlerOutcome && !options.isHandlerOutcome(res.statusCode)) {
      bypass = true;
      void recorder.fail(new Error(`A ${res.statusCode} answered before the handler ran`));
      return;
    }
    try {
      recording = recorder.start(res.statusCode, headersOf(res, extra));
    } catch (error) {
      // The outcome policy threw: the key is released and the response is no longer ours,
      // so the app's error handling can still answer it (unrecorded).
      bypass = true;
      void recorder.fail(error);
      throw error;
    }
  };
  const sinking = () => gone && !closeReleased;
  const releaseClose = () => {
    if (!sinking()) return;
    closeReleased = true;
    original.emit('close');
  };

  // Node marks a response whose socket closed `destroyed` and `closed` before it emits
  // 'close': both read false while the sink stands in for the socket.
  for (const name of ['destroyed', '_closed']) readFalseWhile(res, name, sinking);

  res.emit = function emit(event: string | symbol, ...args: unknown[]) {
    if (event === 'close' && !ending && !destroying && !bypass && !gone) {
      // The client went away first. A response that will be recorded (or whose status is not
      // known yet) must run to its end: hold the event back and keep taking the app's output.
      // One that will not be recorded, or whose lease is lost, may stop now.
      gone = true;
      recorder.clientGone();
      const { signal } = recorder.context;
      if ((started && !recording) || signal.aborted) {
        closeReleased = true;
      } else {
        signal.addEventListener('abort', releaseClose, { once: true });
        // A writer that saw `write` answer false waits for this.
        original.emit('drain');
        return true;
      }
    }
    return original.emit(event, ...args);
  } as ServerResponse['emit'];

  res.writeHead = function writeHead(statusCode: number, ...rest: unknown[]) {
    res.statusCode = statusCode;
    start(typeof rest[0] === 'string' ? rest[1] : rest[0]);
    return original.writeHead(statusCode, ...rest);
  } as ServerResponse['writeHead'];

  res.write = function write(chunk: Chunk, encoding?: BufferEncoding | Callback, cb?: Callback) {
    if (!ending) start();
    if (bypass) return original.write(chunk, encoding, cb);
    if (ending) {
      // The real end waits for the record: a write now would reach the client ahead of the
      // held body. Pass it on after the end, where Node refuses it as it always does.
      late.push([chunk, encoding, cb]);
      return false;
    }
    const callback = typeof encoding === 'function' ? encoding : cb;
    const buffer = toBuffer(chunk, typeof encoding === 'string' ? encoding : undefined);
    const sendNow = recorder.capture(buffer);
    if (sinking()) {
      if (callback) process.nextTick(callback);
      return true;
    }
    if (sendNow) {
      for (const before of held.splice(0)) original.write(before);
      return original.write(buffer, callback);
    }
    held.push(buffer);
    if (callback) queueMicrotask(() => callback());
    return true;
  } as ServerResponse['write'];

  res.end = function end(
    chunk?: Chunk | Callback,
    encoding?: BufferEncoding | Callback,
    cb?: Callback,
  ) {
    if (ending) return res;
    start();
    if (bypass) return original.end(chunk, encoding, cb);
    ending = true;
    let callback = cb;
    if (typeof chunk === 'function') {
      callback = chunk;
      chunk = undefined;
    } else if (typeof encoding === 'function') {
      callback = encoding;
      encoding = undefined;
    }
    if (chunk !== undefined && chunk !== null) {
      const buffer = toBuffer(chunk, encoding as BufferEncoding | undefined);
      recorder.capture(buffer);
      if (buffer.length > 0) held.push(buffer);
    }
    recorder.finish().then(
      () => {
        for (const buffer of held) original.write(buffer);
        original.end(callback);
        for (const args of late.splice(0)) original.write(...args);
        releaseClose();
      },
      (error: unknown) => {
        original.destroy(error instanceof Error ? error : new Error(String(error)));
        releaseClose();
      },
    );
    return res;
  } as ServerResponse['end'];

  res.destroy = function destroy(error?: Error) {
    if (!ending && !destroying && !bypass) void recorder.fail(error);
    destroying = true;
    const result = original.destroy(error);
    releaseClose();
    return result;
  } as ServerResponse['destroy'];
}

/** Writes a Web `Response` (a replay or a problem) to a Node response, chunk by chunk. */
export async function sendWebResponse(res: ServerResponse, response: Response): Promise<void> {
  res.statusCode = response.status;
  for (const [name, value] of response.headers) res.setHeader(name, value);
  if (response.body === null) {
    res.end();
    return;
  }
  const reader = response.body.getReader();
  try {
    for (let read = await reader.read(); !read.done; read = await reader.read())
      res.write(read.value);
    res.end();
  } catch (error) {
    res.destroy(error instanceof Error ? error : new Error(String(error)));
  }
}

/** One header of a Node request as a single string (repeated fields joined by ", "). */
export function headerValue(headers: IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name.toLowerCase()];
  return Array.isArray(value) ? value.join(', ') : value;
}

/**
 * A Node request's target (`req.url`: path and query as sent) as an absolute URL, for
 * `IncomingRequest.url`. Read relative to a base, a target that starts with `//` would
 * name a host (`//a/payouts` is path `/payouts` on host `a`): a prefix keeps it a path.
 */
export function requestUrl(target: string): string {
  return target.startsWith('/') ? `http://localhost${target}` : target;
}
