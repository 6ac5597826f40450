import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { type ResponseHeadSource, startFromOf } from './head-source.js';
import { GENERATION_HEADER, liveCaptureOf, liveGenerationOf } from './live-publish.js';
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

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** What a `Headers` refuses in a value: NUL, CR, LF, and characters past 0xFF. */
const REFUSED_VALUE = /[\0\r\n\u0100-\uffff]/;
/** What a `Headers` strips from both ends of a value. */
const EDGE_WHITESPACE = /^[\t\n\r ]+|[\t\n\r ]+$/g;

function normalized(values: string[]): string {
  return values.map((value) => value.replace(EDGE_WHITESPACE, '')).join(', ');
}

/**
 * The response head exactly as {@link headersOf} gives it, without building a `Headers`
 * unless the policy asks for it. Undefined when `extra` (the headers given to `writeHead`)
 * holds a name or value a `Headers` refuses: `headersOf` then throws as it always did.
 */
function nodeHeadSource(res: ServerResponse, extra: unknown): ResponseHeadSource | undefined {
  const fields = new Map<string, string[]>();
  const add = (name: string, value: unknown): boolean => {
    if (value === undefined || value === null) return true;
    for (const item of Array.isArray(value) ? value : [value]) {
      const text = String(item);
      if (REFUSED_VALUE.test(text)) return false;
      const list = fields.get(name);
      if (list) list.push(text);
      else fields.set(name, [text]);
    }
    return true;
  };
  // Node checked these (lowercase token names, values it would send).
  for (const [name, value] of Object.entries(res.getHeaders() as OutgoingHttpHeaders))
    if (!add(name, value)) return undefined;
  if (Array.isArray(extra)) {
    const flat = extra.flat() as unknown[];
    for (let i = 0; i + 1 < flat.length; i += 2) {
      const name = String(flat[i]);
      const value = String(flat[i + 1]);
      if (!TOKEN.test(name) || REFUSED_VALUE.test(value)) return undefined;
      fields.set(name.toLowerCase(), [value]);
    }
  } else if (extra && typeof extra === 'object') {
    for (const [name, value] of Object.entries(extra)) {
      if (!TOKEN.test(name)) return undefined;
      fields.delete(name.toLowerCase());
      if (!add(name.toLowerCase(), value)) return undefined;
    }
  }
  let headers: Headers | undefined;
  return {
    headers: () => {
      headers ??= headersOf(res, extra);
      return headers;
    },
    recorded: (allowed) => {
      const picked: [string, string][] = [];
      for (const [name, values] of fields)
        if (allowed.has(name)) picked.push([name, normalized(values)]);
      return picked.sort((a, b) => (a[0] < b[0] ? -1 : 1));
    },
    contentLength: () => {
      const values = fields.get('content-length');
      return values ? normalized(values) : null;
    },
    contentType: () => {
      const values = fields.get('content-type');
      return values ? normalized(values) : null;
    },
  };
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

type Listener = (...args: unknown[]) => unknown;
/** Socket events through which code that watches the socket (`on-finished`) learns the client left. */
const SOCKET_EVENTS: ReadonlySet<string | symbol> = new Set(['close', 'error']);
const HOLD = Symbol('idem.socketHold');

/** What one response asks of its socket while it is recorded. */
interface SocketHold {
  /** Whether a `'close'` or `'error'` now is to be kept from the listeners added after `early`. */
  holding(): boolean;
  /** The socket's listeners when the response got it (Node's own, earlier responses'). */
  early: Map<string | symbol, Listener[]>;
  /** Events kept from later listeners, handed to them by `flush`. */
  deferred: { event: string; args: unknown[]; listeners: Listener[] }[];
}

/**
 * Keeps a socket's `'close'` and `'error'` from the listeners added after `hold` began (those of
 * `on-finished`, which `res.sendFile` and `send` use to stop the file stream) while
 * `hold.holding()`; Node's own listeners get them at once. One dispatcher a socket: the hold
 * of its current response decides.
 */
function holdSocketEvents(socket: Socket, hold: SocketHold): void {
  const target = socket as Socket & { [HOLD]?: SocketHold | undefined };
  for (const event of SOCKET_EVENTS)
    hold.early.set(event, socket.rawListeners(event) as Listener[]);
  if (!(HOLD in target)) {
    const emit = socket.emit.bind(socket) as (
      event: string | symbol,
      ...args: unknown[]
    ) => boolean;
    socket.emit = function emitHeld(event: string | symbol, ...args: unknown[]) {
      const current = target[HOLD];
      if (!current || typeof event !== 'string' || !SOCKET_EVENTS.has(event) || !current.holding())
        return emit(event, ...args);
      const early = current.early.get(event) ?? [];
      const listeners = socket.rawListeners(event) as Listener[];
      const late = listeners.filter((listener) => !early.includes(listener));
      // An 'error' nobody else listens to must still throw as it would have.
      if (late.length === 0 || (event === 'error' && late.length === listeners.length))
        return emit(event, ...args);
      for (const listener of late) socket.removeListener(event, listener);
      try {
        return emit(event, ...args);
      } finally {
        for (const listener of late) socket.on(event, listener);
        current.deferred.push({ event, args, listeners: late });
      }
    } as Socket['emit'];
  }
  target[HOLD] = hold;
}

/** Ends `hold`: the events it kept reach the listeners that are still there. */
function releaseSocketEvents(socket: Socket | null, hold: SocketHold): void {
  const target = socket as (Socket & { [HOLD]?: SocketHold | undefined }) | null;
  if (target?.[HOLD] === hold) target[HOLD] = undefined;
  for (const { event, args, listeners } of hold.deferred.splice(0)) {
    const still = new Set(target?.rawListeners(event) ?? []);
    for (const listener of listeners) if (still.has(listener)) listener.apply(target, args);
  }
}

/** A published response read ahead of its first client (see {@link recordServerResponse}). */
interface LiveAhead {
  /** The capture so far (a view: bytes below its length never change). */
  view: Uint8Array;
  /** Bytes of `view` written to the first client's socket. */
  delivered: number;
  /** Bytes of `view` that may go before the outcome is stored (the rest is held). */
  sendable: number;
  /** The socket answered false: the next part waits for its `'drain'`. */
  waiting: boolean;
  /** Hands over when the lease is lost. */
  lost?: () => void;
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
 * ends or destroys the response, or the execution's lease is lost. The socket's own `'close'`
 * and `'error'` are likewise held back from listeners added after the response began (those
 * of `on-finished`, which `res.sendFile` uses), and `res.socket` reads null while the sink
 * stands in for it. So a `stream.pipeline`, a `pipe`, `res.sendFile` or a framework streaming
 * a payload reads its source to the end, the outcome is recorded once, and a retry replays it
 * instead of running the handler again. A response ended from the request's `'close'` or
 * `'aborted'` event after the client left was cut short by the app: it is never recorded
 * (the key is released).
 *
 * While the response is published as a live stream (duplicates attach to it), the app's
 * writes are not paced by the first client: each is taken into the capture (which holds the
 * body anyway, up to the outcome cap), `write` answers true, and the first client's socket is
 * fed from the capture at its own pace. So a first client that stops reading, or whose
 * connection died silently, holds neither the app nor the attached readers back; its
 * response still ends only after the outcome is stored. Past `maxOutcomeBytes` (the
 * generation ends) or once the lease is lost, what the first client was not given yet is
 * handed to its socket and the app's writes go at its pace again. A response that is not
 * published keeps Node's backpressure.
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
  /** A published response read ahead of the first client (undefined: at its pace). */
  let ahead: LiveAhead | undefined;

  const start = (extra?: unknown) => {
    if (started) return;
    started = true;
    if (options.isHandlerOutcome && !options.isHandlerOutcome(res.statusCode)) {
      bypass = true;
      void recorder.fail(new Error(`A ${res.statusCode} answered before the handler ran`));
      return;
    }
    try {
      const startFrom = startFromOf(recorder);
      const source = startFrom && nodeHeadSource(res, extra);
      recording = source
        ? (startFrom as NonNullable<typeof startFrom>)(res.statusCode, source)
        : recorder.start(res.statusCode, headersOf(res, extra));
      // A live stream names its generation, for a client that resumes it.
      const generation = liveGenerationOf(recorder);
      if (generation !== undefined && !res.headersSent)
        res.setHeader(GENERATION_HEADER, String(generation));
      const view = generation === undefined ? undefined : liveCaptureOf(recorder);
      if (view) startAhead(view);
    } catch (error) {
      // The outcome policy threw: the key is released and the response is no longer ours,
      // so the app's error handling can still answer it (unrecorded).
      bypass = true;
      void recorder.fail(error);
      throw error;
    }
  };
  const sinking = () => gone && !closeReleased;
  const hold: SocketHold = {
    holding: () =>
      !ending &&
      !destroying &&
      !bypass &&
      !gone &&
      !(started && !recording) &&
      !recorder.context.signal.aborted,
    early: new Map(),
    deferred: [],
  };
  const initial = res.socket;
  if (initial) holdSocketEvents(initial, hold);
  // A pipelined response gets its socket when the ones before it are done.
  else res.once('socket', (assigned: Socket) => holdSocketEvents(assigned, hold));
  // While the sink stands in for it, `res.socket` is null: code that checks the socket (as
  // `on-finished` does, `socket.writable`) sees a response still on its way, not a dead one.
  // Node marks a response whose socket closed `destroyed` and `closed` before it emits
  // 'close': both read false meanwhile. Set up only when the client leaves (accessors on
  // every response would slow down Node's own reads of them).
  let socket: Socket | null = null;
  let standing = false;
  const currentSocket = () => (standing ? socket : res.socket);
  const standIn = () => {
    if (standing) return;
    standing = true;
    socket = res.socket;
    Object.defineProperty(res, 'socket', {
      configurable: true,
      enumerable: true,
      get: () => (sinking() && !ending ? null : socket),
      set: (next: Socket | null) => {
        socket = next;
      },
    });
    for (const name of ['destroyed', '_closed']) readFalseWhile(res, name, sinking);
  };
  const releaseClose = () => {
    if (sinking()) {
      closeReleased = true;
      original.emit('close');
    }
    releaseSocketEvents(currentSocket(), hold);
  };

  // The request's 'close' and 'aborted' say the client left: an app that ends the response
  // from them cut its body short. That end is not an outcome (see `end`).
  let requestClosing = false;
  const request = (res as ServerResponse & { req?: IncomingMessage }).req;
  if (request) {
    const emitRequest = request.emit.bind(request);
    request.emit = function emit(event: string | symbol, ...args: unknown[]) {
      if (event !== 'close' && event !== 'aborted') return emitRequest(event, ...args);
      requestClosing = true;
      try {
        return emitRequest(event, ...args);
      } finally {
        requestClosing = false;
      }
    } as IncomingMessage['emit'];
  }

  // A published response: the app's writes go into the capture, the first client's socket
  // is fed from it at its own pace (one write outstanding beyond what it took).
  function startAhead(view: Uint8Array): void {
    const state: LiveAhead = { view, delivered: 0, sendable: 0, waiting: false };
    ahead = state;
    // Code that checks before writing (`pipe` does) sees no backpressure either.
    readFalseWhile(res, 'writableNeedDrain', () => ahead === state);
    const lease = recorder.context.signal;
    state.lost = () => {
      if (ahead === state) handOver(state.view);
    };
    lease.addEventListener('abort', state.lost, { once: true });
  }
  /** Gives the first client what it may have of the capture, unless its socket is full. */
  function feed(state: LiveAhead): void {
    if (state.waiting || sinking() || state.sendable <= state.delivered) return;
    const part = state.view.subarray(state.delivered, state.sendable);
    state.delivered = state.sendable;
    if (original.write(part)) return;
    state.waiting = true;
    res.once('drain', () => {
      state.waiting = false;
      if (ahead === state) feed(state);
    });
  }
  /** Stops reading ahead, with the capture as `view` says it is; the app's pace from now. */
  function stopAhead(): LiveAhead | undefined {
    const state = ahead;
    ahead = undefined;
    if (state?.lost) recorder.context.signal.removeEventListener('abort', state.lost);
    return state;
  }
  // Back to the first client's pace (past the cap, or the lease lost): what it was not given
  // yet goes to its socket first (or is held with the chunks the recorder holds), then
  // `chunk`, the one just captured. Answers whether the socket takes more now.
  function handOver(before: Uint8Array, chunk?: Buffer, send = false): boolean {
    const state = stopAhead();
    if (!state || sinking()) return true;
    let ok = true;
    if (state.sendable > state.delivered)
      ok = original.write(before.subarray(state.delivered, state.sendable)) as boolean;
    const rest = before.subarray(state.sendable);
    if (rest.length > 0) held.push(Buffer.from(rest.buffer, rest.byteOffset, rest.byteLength));
    if (chunk && chunk.length > 0) held.push(chunk);
    if (send) for (const buffer of held.splice(0)) ok = original.write(buffer) as boolean;
    return ok;
  }
  /** Takes one captured chunk while reading ahead; answers what `write` answers. */
  function tookAhead(state: LiveAhead, chunk: Buffer, send: boolean, flush: boolean): boolean {
    const after = liveCaptureOf(recorder);
    if (!after) return handOver(state.view, chunk, send);
    state.view = after;
    if (send) state.sendable = after.length;
    if (flush) feed(state);
    return true;
  }

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
        standIn();
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
    if (ahead) {
      const ok = tookAhead(ahead, buffer, sendNow, true);
      if (callback) process.nextTick(callback);
      return ok;
    }
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
    if (requestClosing && !bypass && (gone || currentSocket()?.destroyed)) {
      // Ended from the request's 'close' after the client left: a body cut short, never
      // recorded. The key is released; a retry runs the handler again.
      bypass = true;
      stopAhead();
      void recorder.fail(new Error('The response was ended because the client left'));
      const result = original.end(chunk, encoding, cb);
      releaseClose();
      return result;
    }
    start();
    if (bypass) {
      releaseSocketEvents(currentSocket(), hold);
      return original.end(chunk, encoding, cb);
    }
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
      // Read ahead: the capture holds it, sent with the rest of the capture after the record.
      if (ahead) tookAhead(ahead, buffer, false, false);
      else if (buffer.length > 0) held.push(buffer);
    }
    recorder.finish().then(
      () => {
        // What the first client was not given yet goes with the end.
        const state = stopAhead();
        if (state && state.view.length > state.delivered) {
          const rest = state.view.subarray(state.delivered);
          held.push(Buffer.from(rest.buffer, rest.byteOffset, rest.byteLength));
        }
        // The last held chunk goes with the end: one write, as a plain `end(chunk)` makes.
        const last = held.pop();
        for (const buffer of held) original.write(buffer);
        if (last) original.end(last, callback);
        else original.end(callback);
        for (const args of late.splice(0)) original.write(...args);
        releaseClose();
      },
      (error: unknown) => {
        stopAhead();
        original.destroy(error instanceof Error ? error : new Error(String(error)));
        releaseClose();
      },
    );
    return res;
  } as ServerResponse['end'];

  res.destroy = function destroy(error?: Error) {
    if (!ending && !destroying && !bypass) void recorder.fail(error);
    stopAhead();
    destroying = true;
    const result = original.destroy(error);
    releaseClose();
    return result;
  } as ServerResponse['destroy'];
}
