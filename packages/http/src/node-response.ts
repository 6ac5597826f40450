import {
  type IncomingMessage,
  type OutgoingHttpHeaders,
  type ServerResponse,
  STATUS_CODES,
} from 'node:http';
import type { Socket } from 'node:net';
import {
  endedOutsideOf,
  giveUpUnrecorded,
  heldAfterEndOf,
  type ResponseHeadSource,
  startFromOf,
  trailersOf,
} from './head-source.js';
import { endedOutsideHeld } from './held-context.js';
import { GENERATION_HEADER, liveCaptureOf, liveGenerationOf } from './live-publish.js';
import { readyForOwnMethods } from './own-methods.js';
import type { ResponseRecorder } from './recorder.js';
import { byCodeUnits, sortInPlace } from './small-sort.js';

type Chunk = string | Uint8Array;
type Callback = (error?: Error | null) => void;

/** The error Node's `abortOutgoing` destroys a pending pipelined response with. */
function isAbortOutgoing(error: unknown): boolean {
  return (
    error instanceof Error &&
    (error as Error & { code?: unknown }).code === 'ECONNRESET' &&
    error.message === 'aborted'
  );
}

/** What Node's `write` and `end` take as a chunk; anything else they refuse before any head. */
function isChunk(chunk: unknown): chunk is Chunk {
  return typeof chunk === 'string' || chunk instanceof Uint8Array;
}

function toBuffer(chunk: Chunk, encoding?: BufferEncoding): Buffer {
  return typeof chunk === 'string' ? Buffer.from(chunk, encoding ?? 'utf8') : Buffer.from(chunk);
}

/**
 * The fields of a header array given to `writeHead`, as Node reads it:
 * `[name, value, name, value, ...]` or `[[name, value], ...]` (a value may be an array).
 */
function arrayFields(extra: readonly unknown[]): [string, unknown][] {
  const fields: [string, unknown][] = [];
  if (Array.isArray(extra[0]))
    for (const entry of extra as unknown[][]) fields.push([String(entry[0]), entry[1]]);
  else for (let i = 0; i + 1 < extra.length; i += 2) fields.push([String(extra[i]), extra[i + 1]]);
  return fields;
}

/**
 * Node 22 and later append the fields of a header array given to `writeHead` after `setHeader`
 * (nodejs/node#50394); Node 20 sets them one by one there (a repeated name keeps its last
 * value). Given without `setHeader`, the array is sent as it is, every value kept.
 */
const APPENDS_AFTER_SET_HEADER = Number(process.versions.node.split('.')[0]) >= 22;

/**
 * Whether Node sends the headers given to `writeHead` as they are, every field kept (a name
 * repeated in an array, or in an object in two cases: `{ 'X-A': '1', 'x-a': '2' }`): it does
 * unless `setHeader` made its outgoing headers (`kOutHeaders`), which it then merges them
 * into, one `setHeader` a field (a repeated name keeps its last value). Node 22 and later
 * append an array's fields there instead (see `APPENDS_AFTER_SET_HEADER`). HTTP/2's compat
 * response always appends an array's fields (after removing the names it sets) and sets an
 * object's one by one.
 */
function keepsRepeats(res: ServerResponse, array: boolean): boolean {
  if (isHttp2(res)) return array;
  if (array && APPENDS_AFTER_SET_HEADER) return true;
  return !mergesIntoOutHeaders(res);
}

/**
 * Whether Node's HTTP/1.1 `writeHead` merges the headers it is given into the outgoing ones
 * (`setHeader` made them, `kOutHeaders`): it then skips a field with an empty name (`if (k)`),
 * where it refuses one given without them.
 */
function mergesIntoOutHeaders(res: ServerResponse): boolean {
  for (const symbol of Object.getOwnPropertySymbols(res))
    if (symbol.description === 'kOutHeaders')
      return (res as unknown as Record<symbol, unknown>)[symbol] != null;
  return res.getHeaderNames().length !== 0;
}

/**
 * Whether `res` is the HTTP/2 compat response of `node:http2` (`Http2ServerResponse`): asked
 * once a response, by a method only it has.
 */
function isHttp2(res: ServerResponse): boolean {
  return 'createPushResponse' in res;
}

/** Whether `text` has a character past U+007F (a reason phrase Node sends one byte each as Latin-1). */
function pastAsciiText(text: string | undefined): boolean {
  if (text === undefined) return false;
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) > 0x7f) return true;
  return false;
}

/** Longest reason phrase recorded: a longer one is replayed as the status code's usual one. */
const MAX_REASON = 1024;

/**
 * The reason phrase of an HTTP/1.x response's status line (`given` to `writeHead`, else
 * `res.statusMessage`) when it is not the status code's usual one, to be recorded and
 * replayed; undefined for the usual one (or none). Node checks its characters as it makes the
 * head: a phrase it refuses makes the head refused, and nothing is recorded.
 */
function customReason(res: ServerResponse, given: string | undefined): string | undefined {
  const text = given ?? res.statusMessage;
  if (typeof text !== 'string' || text === '' || text.length > MAX_REASON) return undefined;
  return text === STATUS_CODES[res.statusCode] ? undefined : text;
}

/**
 * Whether an HTTP/2 client never sees the field value `text`: one that starts or ends with a
 * space or a tab is malformed in HTTP/2 (RFC 9113, 8.2.1), and node:http2's client (nghttp2)
 * drops the field, where a `Headers` would keep it trimmed.
 */
function droppedOverHttp2(text: string): boolean {
  const first = text.charCodeAt(0);
  const last = text.charCodeAt(text.length - 1);
  return first === 32 || first === 9 || last === 32 || last === 9;
}

/**
 * Node's outgoing headers (plus any passed to `writeHead`) as a Web `Headers`. HTTP/2
 * pseudo-headers (`:status`, which `node:http2` keeps among them once the head is sent, or
 * one given to `writeHead`, which it refuses) are left out: they are no header of a response.
 * Over HTTP/2, a value with a space or a tab at either end is left out as well: the client
 * never gets it (see `droppedOverHttp2`), so neither does a replay.
 */
export function headersOf(res: ServerResponse, extra?: unknown): Headers {
  const headers = new Headers();
  const http2 = isHttp2(res);
  const add = (name: string, value: unknown) => {
    if (value === undefined || value === null || isPseudo(name)) return;
    for (const item of Array.isArray(value) ? value : [value]) {
      const text = String(item);
      if (!http2 || !droppedOverHttp2(text)) headers.append(name, text);
    }
  };
  const remove = (name: string) => {
    if (!isPseudo(name)) headers.delete(name);
  };
  for (const [name, value] of Object.entries(res.getHeaders() as OutgoingHttpHeaders))
    add(name, value);
  if (extra && typeof extra === 'object') {
    // As Node does: the given fields replace the outgoing ones of the same names, and a name
    // given twice keeps every value (or its last one, see `keepsRepeats`).
    const array = Array.isArray(extra);
    const fields = withoutSkipped(res, array ? arrayFields(extra) : Object.entries(extra), http2);
    const keep = keepsRepeats(res, array);
    for (const [name] of fields) remove(name);
    for (const [name, value] of fields) {
      if (!keep) remove(name);
      add(name, value);
    }
  }
  return headers;
}

/**
 * The fields given to `writeHead` that Node's HTTP/1.1 response takes: one with an empty name
 * is skipped when they are merged into the outgoing headers (see `mergesIntoOutHeaders`).
 */
function withoutSkipped(
  res: ServerResponse,
  fields: [string, unknown][],
  http2: boolean,
): [string, unknown][] {
  if (http2 || !fields.some(([name]) => name === '') || !mergesIntoOutHeaders(res)) return fields;
  return fields.filter(([name]) => name !== '');
}

/**
 * Whether the headers given to `writeHead` can carry the generation header of a published
 * stream (see `withGeneration`): an object, or a header array Node takes (an even-length
 * `[name, value, ...]`, or `[[name, value], ...]`).
 */
function canCarry(extra: unknown): boolean {
  if (!extra || typeof extra !== 'object') return false;
  if (!Array.isArray(extra)) return true;
  return Array.isArray(extra[0]) || extra.length % 2 === 0;
}

/**
 * The headers given to `writeHead` (a copy, see `canCarry`) with the generation header of a
 * published stream added, unless they name it (theirs is sent then, as when Node's
 * `writeHead` replaced the one `setHeader` set).
 */
function withGeneration(extra: object, generation: string): object {
  if (Array.isArray(extra)) {
    const fields = arrayFields(extra);
    if (fields.some(([name]) => name.toLowerCase() === GENERATION_HEADER)) return extra;
    return Array.isArray(extra[0])
      ? [...extra, [GENERATION_HEADER, generation]]
      : [...extra, GENERATION_HEADER, generation];
  }
  for (const name of Object.keys(extra)) if (name.toLowerCase() === GENERATION_HEADER) return extra;
  return { ...extra, [GENERATION_HEADER]: generation };
}

/** An HTTP/2 pseudo-header name (`:status`). */
function isPseudo(name: string): boolean {
  return name.charCodeAt(0) === 58;
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** What a `Headers` refuses in a value: NUL, CR, LF, and characters past 0xFF. */
const REFUSED_VALUE = /[\0\r\n\u0100-\uffff]/;
/** What {@link REFUSED_VALUE} finds, or a character past U+007F: one test for an ASCII value. */
const NOT_PLAIN_VALUE = /[\0\r\n\u0080-\uffff]/;
/**
 * A value checked by `refused` since the head `nodeHeadSource` reads began had a character
 * past U+007F (saved and put back around it: one head read may start another).
 */
let pastAscii = false;

/**
 * Whether a `Headers` refuses the value `text` (see `REFUSED_VALUE`), noting one with a
 * character past U+007F it takes in `pastAscii` (see `sendsHeadAsLatin1`).
 */
function refused(text: string): boolean {
  if (!NOT_PLAIN_VALUE.test(text)) return false;
  if (REFUSED_VALUE.test(text)) return true;
  pastAscii = true;
  return false;
}
/**
 * A value without what a `Headers` strips from both ends of it. Loops, not
 * `/^[\t\n\r ]+|[\t\n\r ]+$/g`: that expression backtracks over every run of whitespace not
 * at the end (64 K spaces between two characters took about 2 s of CPU).
 */
function stripEdges(value: string): string {
  let start = 0;
  let end = value.length;
  while (start < end && isEdgeWhitespace(value.charCodeAt(start))) start++;
  while (end > start && isEdgeWhitespace(value.charCodeAt(end - 1))) end--;
  return start === 0 && end === value.length ? value : value.slice(start, end);
}

function normalized(values: string[]): string {
  return values.map(stripEdges).join(', ');
}

/** A header value as {@link headersOf} gives it: each item stripped, joined by `, `. */
function normalizedValue(value: string | readonly string[]): string {
  if (typeof value !== 'string') return normalized(value as string[]);
  const last = value.length - 1;
  // Usually nothing to strip: no regular expression run.
  return last >= 0 &&
    (isEdgeWhitespace(value.charCodeAt(0)) || isEdgeWhitespace(value.charCodeAt(last)))
    ? stripEdges(value)
    : value;
}

/** Tab, LF, CR or space: what a `Headers` strips from both ends of a value. */
function isEdgeWhitespace(code: number): boolean {
  return code === 32 || code === 9 || code === 10 || code === 13;
}

/**
 * A header value as text, or its items (an array), or undefined when a `Headers` refuses one
 * (see `REFUSED_VALUE`). Over HTTP/2 (`http2`), the items its client drops are left out (see
 * `droppedOverHttp2`): none left is an empty array.
 */
function checkedValue(value: unknown, http2: boolean): string | string[] | undefined {
  if (!Array.isArray(value)) {
    const text = typeof value === 'string' ? value : String(value);
    if (refused(text)) return undefined;
    return http2 && droppedOverHttp2(text) ? [] : text;
  }
  const items: string[] = [];
  for (const item of value) {
    const text = String(item);
    if (refused(text)) return undefined;
    if (!http2 || !droppedOverHttp2(text)) items.push(text);
  }
  return items;
}

/**
 * The fields of a response head by lowercase name (null prototype): a name's value, or its
 * values when it has several. A response's outgoing headers as `getHeaders` gives them (Node
 * checked their names), unless `writeHead` was given headers.
 */
type HeadFields = Record<string, string | string[]>;

/**
 * The response head exactly as {@link headersOf} gives it, without building a `Headers`
 * unless the policy asks for it. A class (see `LazyHead` in recorder.ts): one object a
 * response, its methods shared.
 */
class NodeHeadSource implements ResponseHeadSource {
  #headers: Headers | undefined;
  constructor(
    private readonly fields: HeadFields,
    /** A value has a character past U+007F (see `sendsHeadAsLatin1`). */
    readonly pastAscii: boolean,
    private readonly phrase: string | undefined,
  ) {}

  reason(): string | undefined {
    return this.phrase;
  }

  /**
   * Built on first read from the fields read when the head was made, never from `res` or the
   * headers given to `writeHead` again: node:http2's `writeHead` appends a repeated name's
   * values into the array it was given first, and a policy may read this after it ran.
   */
  headers(): Headers {
    if (this.#headers) return this.#headers;
    const headers = new Headers();
    const { fields } = this;
    for (const name in fields) {
      const value = fields[name] as string | string[];
      if (isPseudo(name)) continue;
      if (typeof value === 'string') headers.append(name, value);
      else for (const item of value) headers.append(name, item);
    }
    this.#headers = headers;
    return headers;
  }

  recorded(allowed: ReadonlySet<string>): [string, string][] {
    const picked: [string, string][] = [];
    const { fields } = this;
    for (const name in fields)
      if (allowed.has(name)) picked.push([name, normalizedValue(fields[name] ?? '')]);
    return picked.length > 1 ? sortInPlace(picked, byFieldName) : picked;
  }

  contentLength(): string | null {
    const value = this.fields['content-length'];
    return value === undefined ? null : normalizedValue(value);
  }

  contentType(): string | null {
    const value = this.fields['content-type'];
    return value === undefined ? null : normalizedValue(value);
  }

  trailer(): string | null {
    const value = this.fields.trailer;
    return value === undefined ? null : normalizedValue(value);
  }
}

const NO_FIELDS: readonly [string, string][] = [];

/**
 * The trailer fields Node sends after the body of `res` (`addTrailers`), as name, value pairs
 * in order, read when the app ends it. HTTP/1.1 sends them only with chunked framing (not to
 * an HTTP/1.0 client, nor after a `Content-Length`): none then, as the first client got none.
 * HTTP/2's compat response sends them at the end of its stream.
 */
function sentTrailers(res: ServerResponse, http2: boolean): readonly [string, string][] {
  // The usual case first, with nothing made: no trailers over HTTP/1.1.
  if (!http2 && !(res as ServerResponse & { _trailer?: unknown })._trailer) return NO_FIELDS;
  const fields: [string, string][] = [];
  if (http2) {
    const symbol = http2TrailersSymbol(res);
    const trailers =
      symbol === undefined ? undefined : (res as unknown as Record<symbol, unknown>)[symbol];
    if (!trailers || typeof trailers !== 'object') return fields;
    for (const [name, value] of Object.entries(trailers)) {
      if (value === undefined || value === null) continue;
      for (const item of Array.isArray(value) ? value : [value]) fields.push([name, String(item)]);
    }
    return fields;
  }
  const own = res as ServerResponse & {
    _trailer?: unknown;
    chunkedEncoding?: boolean;
    _hasBody?: boolean;
  };
  const text = own._trailer;
  if (typeof text !== 'string' || text === '' || own.chunkedEncoding !== true || !own._hasBody)
    return fields;
  // As Node wrote them: `name: value\r\n` each (a name is a token, a value has no line break).
  for (const line of text.split('\r\n')) {
    const colon = line.indexOf(':');
    if (colon > 0) fields.push([line.slice(0, colon), stripEdges(line.slice(colon + 1))]);
  }
  return fields;
}

/** The trailer section of `res` as Node holds it, to be put back by {@link restoreTrailers}. */
type TrailerState =
  | { readonly text: unknown }
  | { readonly symbol: symbol; readonly fields: unknown }
  | undefined;

/** node:http2's own symbol for the trailers of a compat response (`addTrailers` fills it). */
function http2TrailersSymbol(res: ServerResponse): symbol | undefined {
  return Object.getOwnPropertySymbols(res).find((symbol) => symbol.description === 'trailers');
}

/**
 * The trailer section of `res` when the app ends it: what {@link sentTrailers} recorded. Node
 * reads it only when the end goes out, which idem holds until the outcome is stored; an
 * `addTrailers` the app makes in between (a no-op over HTTP/1.1 without idem: the section
 * went out with the end) must not reach the first client, which then gets what is replayed.
 */
function trailerState(res: ServerResponse, http2: boolean): TrailerState {
  if (!http2) return { text: (res as ServerResponse & { _trailer?: unknown })._trailer };
  const symbol = http2TrailersSymbol(res);
  if (symbol === undefined) return undefined;
  const fields = (res as unknown as Record<symbol, unknown>)[symbol];
  // node:http2 adds to this object in place: a copy, with its null prototype.
  return {
    symbol,
    fields:
      fields && typeof fields === 'object' ? Object.assign(Object.create(null), fields) : fields,
  };
}

/** Puts the trailer section read by {@link trailerState} back on `res`. */
function restoreTrailers(res: ServerResponse, state: TrailerState): void {
  if (state === undefined) return;
  if ('symbol' in state) (res as unknown as Record<symbol, unknown>)[state.symbol] = state.fields;
  else (res as ServerResponse & { _trailer?: unknown })._trailer = state.text;
}

/** Orders recorded fields by name (each name comes once from `getHeaders`). */
function byFieldName(a: [string, string], b: [string, string]): number {
  return byCodeUnits(a[0], b[0]);
}

/**
 * The response head exactly as {@link headersOf} gives it (see {@link NodeHeadSource}).
 * Undefined when a name or value is one a `Headers` refuses: `headersOf` then throws as it
 * always did.
 */
function nodeHeadSource(
  res: ServerResponse,
  extra: unknown,
  reason: string | undefined,
): NodeHeadSource | undefined {
  // A value's `toString` may make another response's head meanwhile (a lazy value): the flag
  // it leaves is that head's, this one's is put back after.
  const outer = pastAscii;
  pastAscii = false;
  try {
    return readHead(res, extra, reason);
  } finally {
    pastAscii = outer;
  }
}

/** {@link nodeHeadSource}, `pastAscii` false when it begins. */
function readHead(
  res: ServerResponse,
  extra: unknown,
  reason: string | undefined,
): NodeHeadSource | undefined {
  // Node checked these (lowercase token names). Their values are checked here: node:http2's
  // `setHeader` takes a value with a line break.
  // A copy made for us (null prototype; an array value is Node's own, never changed here):
  // used as the fields, each value replaced by its text or items.
  const fields = res.getHeaders() as Record<string, unknown>;
  const http2 = isHttp2(res);
  for (const name in fields) {
    const value = fields[name];
    if (typeof value === 'string') {
      if (refused(value)) return undefined;
      if (!http2 || !droppedOverHttp2(value)) continue;
    }
    const checked = value === undefined || value === null ? undefined : checkedValue(value, http2);
    if (checked === undefined && value !== undefined && value !== null) return undefined;
    if (checked === undefined || (Array.isArray(checked) && checked.length === 0))
      delete fields[name];
    else fields[name] = checked;
  }
  const head = fields as HeadFields;
  if (extra && typeof extra === 'object' && !mergeExtra(res, head, extra, http2)) return undefined;
  return new NodeHeadSource(head, pastAscii, reason);
}

/**
 * Merges the headers given to `writeHead` into `fields` as {@link headersOf} does: replaced
 * by name, then every value appended (or set, see `keepsRepeats`). False when one is
 * a name or value a `Headers` refuses.
 */
function mergeExtra(
  res: ServerResponse,
  fields: HeadFields,
  extra: object,
  http2: boolean,
): boolean {
  const add = (name: string, value: unknown): boolean => {
    if (value === undefined || value === null) return true;
    const checked = checkedValue(value, http2);
    if (checked === undefined) return false;
    const list = fields[name];
    // A name's first value as it is (a one-item list reads the same everywhere): Fastify
    // gives every header to `writeHead`.
    if (list === undefined && typeof checked === 'string') {
      fields[name] = checked;
      return true;
    }
    const items = typeof checked === 'string' ? [checked] : checked;
    if (items.length === 0) return true;
    fields[name] =
      list === undefined ? items : [...(typeof list === 'string' ? [list] : list), ...items];
    return true;
  };
  if (Array.isArray(extra)) {
    const given = withoutSkipped(res, arrayFields(extra), http2);
    const keep = keepsRepeats(res, true);
    for (const [name] of given) {
      if (!TOKEN.test(name)) return false;
      delete fields[name.toLowerCase()];
    }
    for (const [name, value] of given) {
      if (!keep) delete fields[name.toLowerCase()];
      if (!add(name.toLowerCase(), value)) return false;
    }
    return true;
  }
  // An object: a name already among the fields is an outgoing one (replaced) or one given
  // twice in another case (kept or replaced, see `keepsRepeats`; asked only then). Without
  // outgoing headers Node sends the object as it is: the fields hold none of them then.
  let keep: boolean | undefined;
  for (const [name, value] of Object.entries(extra)) {
    if (!TOKEN.test(name)) {
      if (name === '' && !http2 && mergesIntoOutHeaders(res)) continue;
      return false;
    }
    const lower = name.toLowerCase();
    if (fields[lower] !== undefined) {
      keep ??= keepsRepeats(res, false);
      if (!keep) delete fields[lower];
    }
    if (!add(lower, value)) return false;
  }
  return true;
}

/** Whether a value of `headers` has a character past U+007F. */
function hasPastAscii(headers: Headers): boolean {
  for (const [, value] of headers) if (NOT_PLAIN_VALUE.test(value)) return true;
  return false;
}

type Send = (data: unknown, encoding?: unknown, ...rest: unknown[]) => boolean;

/**
 * Makes Node send the HTTP/1.1 head of `res` as Latin-1 (one byte a character), as a
 * `Headers` holds a value and a replay puts it on the wire. Node sends the head with the
 * first data it sends: as Latin-1 with bytes (every chunk the recorder passes on is a
 * `Buffer`), but with a string in the string's encoding, and `flushHeaders` sends it with
 * `''`, as UTF-8: `café` would reach the first client as other bytes than a replay's. Set
 * only for a head with a value past U+007F (an own property of `res` costs a hidden class).
 */
function sendsHeadAsLatin1(res: ServerResponse): void {
  const own = res as ServerResponse & { _send?: Send; _headerSent?: boolean };
  const send = own._send;
  if (typeof send !== 'function' || own._headerSent) return;
  own._send = function _send(data, encoding, ...rest) {
    if (own._headerSent || typeof data !== 'string' || (encoding && encoding !== 'utf8'))
      return send.call(this, data, encoding, ...rest);
    // The head alone, as Latin-1 (`flushHeaders`), then the string, if any, as it was.
    if (data === '') return send.call(this, data, 'latin1', ...rest);
    send.call(this, '', 'latin1');
    return send.call(this, data, encoding, ...rest);
  };
}

/**
 * Makes `object[name]` read false while `hidden()` is true, and as before otherwise, whether
 * it is an own value (set by Node on the instance) or an accessor further up the chain.
 */
function readFalseWhile(object: object, name: string, hidden: () => boolean): void {
  readWhile(object, name, hidden, false);
}

/** The descriptor of `object[name]`, its own or the one further up the chain. */
function propertyOf(object: object, name: string): PropertyDescriptor | undefined {
  let owner: object | null = object;
  let descriptor: PropertyDescriptor | undefined;
  while (owner && !descriptor) {
    descriptor = Object.getOwnPropertyDescriptor(owner, name);
    owner = Object.getPrototypeOf(owner);
  }
  return descriptor;
}

/** Makes `object[name]` read `shown` while `when()` is true, and as before otherwise. */
function readWhile(object: object, name: string, when: () => boolean, shown: boolean): void {
  const descriptor = propertyOf(object, name);
  const { get, set } = descriptor ?? {};
  let value: unknown = descriptor?.value;
  Object.defineProperty(object, name, {
    configurable: true,
    enumerable: true,
    get: () => (when() ? shown : get ? get.call(object) : value),
    set: (next: unknown) => {
      if (set) set.call(object, next);
      else value = next;
    },
  });
}

type Listener = (...args: unknown[]) => unknown;
type Loose = (...args: unknown[]) => unknown;
type Emit = (event: string | symbol, ...args: unknown[]) => boolean;
const HOLD = Symbol('idem.socketHold');
/**
 * Marks the connection `'close'` listener of a pipelined response still waiting for its
 * socket (see `awaitSocket`, and `clientLeftSignal` of `node.ts`): a hold never keeps the
 * event from it. @internal
 */
export const UNHELD = Symbol('idem.unheld');
const NO_LISTENERS: readonly Listener[] = [];

/** What one response asks of its socket while it is recorded. */
interface SocketHold {
  /** Whether a `'close'` or `'error'` now is to be kept from the listeners added after the hold began. */
  holding(): boolean;
  /** The socket's listeners of `event` when the hold began (Node's own, earlier responses'). */
  earlyListeners(event: string): readonly Listener[];
  /** Keeps an event from `listeners`, for `releaseSocketEvents` to hand it to them. */
  defer(event: string, args: unknown[], listeners: Listener[]): void;
  /**
   * Runs the listeners of the socket's `'close'`: the client left, an end made from them is a
   * body cut short (as one made from the request's `'close'`, see `onEnd`).
   */
  closing(emit: () => boolean): boolean;
}

/**
 * The `emit` of a socket whose `'close'` and `'error'` the hold of its current response may
 * keep from the listeners added after the hold began. One a socket, installed by the first
 * response recorded on it: the hold of its current response decides.
 */
/** Sockets whose `'close'` is being emitted through {@link SocketHold.closing}. */
const closingSocket = new WeakSet<Socket>();

function heldEmit(socket: Socket & { [HOLD]?: SocketHold | undefined }): Socket['emit'] {
  const emit = socket.emit as Emit;
  return function emitHeld(event: string | symbol, ...args: unknown[]): boolean {
    const current = socket[HOLD];
    // The connection closed: what its listeners end (Nest's `@Sse()` tears its stream down and
    // ends the response) is cut short, never an outcome (rev32d).
    if (current && event === 'close' && !closingSocket.has(socket)) {
      closingSocket.add(socket);
      try {
        return current.closing((): boolean => emitHeld(event, ...args));
      } finally {
        closingSocket.delete(socket);
      }
    }
    if (!current || (event !== 'close' && event !== 'error') || !current.holding())
      return emit.call(socket, event, ...args);
    const early = current.earlyListeners(event);
    const listeners = socket.rawListeners(event) as Listener[];
    const late = listeners.filter((listener) => !early.includes(listener) && !(UNHELD in listener));
    // An 'error' nobody else listens to must still throw as it would have.
    if (late.length === 0 || (event === 'error' && late.length === listeners.length))
      return emit.call(socket, event, ...args);
    for (const listener of late) socket.removeListener(event, listener);
    try {
      return emit.call(socket, event, ...args);
    } finally {
      for (const listener of late) socket.on(event, listener);
      current.defer(event, args, late);
    }
  } as Socket['emit'];
}

/** The socket's listeners of `event` now, without a copy when it has none. */
function listenersNow(socket: Socket, event: string): readonly Listener[] {
  return socket.listenerCount(event) === 0
    ? NO_LISTENERS
    : (socket.rawListeners(event) as Listener[]);
}

/** What the recorder uses of an `Http2Stream` (the stream of an HTTP/2 compat response). */
interface StreamLike {
  readonly destroyed: boolean;
  readonly closed: boolean;
  readonly aborted: boolean;
  emit: Emit;
  rawListeners(event: string): unknown[];
  listenerCount(event: string): number;
  on(event: string, listener: Listener): unknown;
  removeListener(event: string, listener: Listener): unknown;
}

/**
 * The HTTP/2 counterpart of the socket hold, one a stream (never the connection's socket,
 * shared by every stream of the session): the stream's `'close'` and `'error'` are kept
 * from the listeners added through `res.socket` (node:http2's proxy of the stream, which
 * `on-finished` listens on, as Koa and `res.sendFile` use it) while the outcome is not
 * decided (`req.socket` gives the same proxy). Listeners the app adds on the stream itself
 * (`req.stream`) get them at once.
 */
interface StreamHold {
  readonly stream: StreamLike;
  /** The listeners added through the `on` and `once` of `proxy` (see `socketProxy`). */
  readonly proxied: Set<unknown>;
  /** The proxy `res.socket` and `req.socket` give, wrapping node:http2's (`inner`). */
  proxy?: object;
  /** node:http2's, the one `proxy` wraps. */
  inner?: object;
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

/** A `write` or `end` the app made while the end waited for the record. */
type LateCall = [
  end: boolean,
  chunk: Chunk | Callback | undefined,
  encoding: BufferEncoding | Callback | undefined,
  cb: Callback | undefined,
];

/** Options of {@link recordServerResponse}. */
export interface RecordServerResponseOptions {
  /**
   * Whether the response, once its status is known, is the outcome of the handler the key
   * guards. When it answers false (e.g. a body parser's 400 written before any route ran), the
   * key is released and the response passes through unrecorded, under every policy.
   * @default every response is
   */
  isHandlerOutcome?: (status: number) => boolean;
  /**
   * Whether `res.writableEnded` reads true from the app's `end` on, as Node has it once `end`
   * is called, while that end waits for the outcome to be recorded. Otherwise it reads true
   * only once the held end went out. Fastify reads it as `reply.sent`: an async route that
   * returns the reply would otherwise wait for the response's 'finish' (`reply.then` adds
   * its listeners to `res`), and a second `reply.send` would not be refused as it is
   * without idem. Nothing else of `res` changes (Node's own `finished` is left alone: its
   * `end` reads it when the held end goes out).
   * @default false
   */
  endedWhileHeld?: boolean;
}

/** `writableEnded` of a response whose app called `end` (see `endedWhileHeld`): one getter for all. */
const ENDED: PropertyDescriptor = { configurable: true, enumerable: false, get: endedTrue };
function endedTrue(): boolean {
  return true;
}

/**
 * What a recording holds in place of its recorder once the response is settled: its held end
 * went out after the record, it was destroyed after a record that failed, the app destroyed
 * it before its end, or it went through unrecorded to its end (not the handler's outcome, or
 * ended after its client left). Every
 * call passes straight to Node from then on and none reaches the recorder, but `res` and
 * `req` keep their replaced methods, and through them the recording, until they are
 * collected themselves. Letting go of the recorder there lets the execution's objects (the
 * recorder and its capture, the engine's execution, the request's fingerprint) die young.
 * Dead objects in the old generation keep what they point to through every scavenge until
 * the next mark-compact, and V8 allocates Node's request and response objects there directly
 * once their allocation sites' objects mostly survived a scavenge, as they do under load: an
 * idem Fastify server promoted 3.0 KB a first execution, 0.7 with this (benchmarks/HISTORY.md,
 * twentieth pass). Inert where the settled response could still reach it: never aborted,
 * records nothing.
 */
const SETTLED: ResponseRecorder = {
  context: { signal: new AbortController().signal } as ResponseRecorder['context'],
  start: () => false,
  capture: () => true,
  finish: () => Promise.resolve(),
  fail: () => Promise.resolve(),
  clientGone: () => {},
  holdWhile: () => {},
  failAtEnd: () => {},
  lateStart: () => undefined,
  recordResponse: (response) => Promise.resolve(response),
};

/**
 * The state of one response recorded by {@link recordServerResponse}, and what its replaced
 * methods do. One object a response, with its methods on the prototype: a first execution
 * makes the five replacements of `res` and the one of `req.emit`, nothing else up front (the
 * socket hold, the stand-in and the read-ahead have their state here, set up when used).
 */
class ResponseRecording implements SocketHold {
  // The response's methods before they were replaced, always called on `res`.
  private readonly writeHead: Loose;
  private readonly write: Loose;
  private readonly end: Loose;
  private readonly destroy: Loose;
  private readonly emit: Emit;
  /** Chunks held until the outcome is recorded, or until a chunk that may go now. */
  private held: Buffer[] = [];
  /**
   * Writes (and second ends) the app made after `end`, passed on after the real end so Node
   * answers them as it does: refused with ERR_STREAM_WRITE_AFTER_END, a callback called.
   */
  private late: LateCall[] | undefined;
  /**
   * The held end went out (see `ended`): every call passes straight to Node from now on, the
   * ones the real `end` makes itself included (light-my-request's and `node:http2`'s write
   * their last chunk with `this.write`).
   */
  private released = false;
  /** Set while {@link ended} sends the held end (see `watchLateWrites`). */
  private sendingEnd = false;
  /**
   * An HTTP/2 response (`node:http2`'s compat `Http2ServerResponse`): it has no socket of its
   * own (its `socket` is a proxy of the connection's, shared by every stream) and, when its
   * stream closes before the end (the client reset it), emits `'finish'` before `'close'`.
   */
  readonly http2: boolean;
  /** That `'finish'`, held back with the `'close'` after it (see `releaseClose`). */
  private finishHeld = false;
  private started = false;
  /** The policy made the response final: it is recorded when it ends. */
  private recording = false;
  /** Not the handler's outcome: released, everything passes through untouched. */
  bypass = false;
  ending = false;
  private destroying = false;
  /** The client left; the app still writes to a sink that only records. */
  private gone = false;
  /** The held-back `'close'` was emitted: `res` shows its real (destroyed) state again. */
  private closeReleased = false;
  /** A `'close'` went to the listeners of `res`. */
  private closeSent = false;
  /** The app destroyed the response after its own end, while that end was held (see `onDestroy`). */
  private destroyAfterEnd: { error: Error | undefined } | undefined;
  /** A published response read ahead of the first client (undefined: at its pace). */
  private ahead: LiveAhead | undefined;
  /** The app is in a listener of the request's `'close'` or `'aborted'`. */
  requestClosing = false;
  /** The socket `res` had when the sink began to stand in for it (see `standIn`). */
  private socket: Socket | null = null;
  private standing = false;
  // The socket hold: the socket's listeners when it began, the events kept from later ones.
  private earlyClose: readonly Listener[] = NO_LISTENERS;
  private earlyError: readonly Listener[] = NO_LISTENERS;
  private deferred: { event: string; args: unknown[]; listeners: Listener[] }[] | undefined;
  /** HTTP/2: the hold of the response's stream (see `holdStream`). */
  private h2: StreamHold | undefined;
  /** The trailer section at the app's end, sent with the held end (see `trailerState`). */
  private trailers: TrailerState;
  /**
   * HTTP/2: the head as it stood when the recorder took it (the first `write` or `end`), for
   * Node to send when the held body goes out (see `implicitHead`).
   */
  private h2Head: { status: number; headers: OutgoingHttpHeaders } | undefined;

  constructor(
    private readonly res: ServerResponse,
    private recorder: ResponseRecorder,
    private readonly isHandlerOutcome: ((status: number) => boolean) | undefined,
    /** See {@link RecordServerResponseOptions.endedWhileHeld}. */
    private readonly endedWhileHeld = false,
  ) {
    this.writeHead = res.writeHead as Loose;
    this.write = res.write as Loose;
    this.end = res.end as Loose;
    this.destroy = res.destroy as Loose;
    this.emit = res.emit as Emit;
    this.http2 = isHttp2(res);
  }

  // --- the socket hold ---------------------------------------------------------------------

  holding(): boolean {
    return (
      !this.ending &&
      !this.destroying &&
      !this.bypass &&
      !this.gone &&
      !(this.started && !this.recording) &&
      // Last: the engine makes the signal's AbortController on the first read.
      !this.recorder.context.signal.aborted
    );
  }

  earlyListeners(event: string): readonly Listener[] {
    return event === 'close' ? this.earlyClose : event === 'error' ? this.earlyError : NO_LISTENERS;
  }

  defer(event: string, args: unknown[], listeners: Listener[]): void {
    this.deferred ??= [];
    this.deferred.push({ event, args, listeners });
  }

  closing(emit: () => boolean): boolean {
    const was = this.requestClosing;
    this.requestClosing = true;
    try {
      return emit();
    } finally {
      this.requestClosing = was;
    }
  }

  /**
   * Keeps the socket's `'close'` and `'error'` from the listeners added from now on (those of
   * `on-finished`, which `res.sendFile` and `send` use to stop the file stream) while
   * `holding()`; Node's own listeners get them at once.
   */
  holdSocket(socket: Socket): void {
    const target = socket as Socket & { [HOLD]?: SocketHold | undefined };
    this.earlyClose = listenersNow(socket, 'close');
    this.earlyError = listenersNow(socket, 'error');
    if (!(HOLD in target)) socket.emit = heldEmit(target);
    target[HOLD] = this;
  }

  /** Ends the hold: the events it kept reach the listeners that are still there. */
  releaseSocket(socket: Socket | null): void {
    const target = socket as (Socket & { [HOLD]?: SocketHold | undefined }) | null;
    if (target?.[HOLD] === this) target[HOLD] = undefined;
    const deferred = this.deferred;
    if (deferred === undefined) return;
    this.deferred = undefined;
    // Kept until the lease was lost (the app had not ended): the client left, an end made
    // from these listeners is a body cut short, as one made from the request's 'close'.
    const was = this.requestClosing;
    this.requestClosing = true;
    try {
      for (const { event, args, listeners } of deferred) {
        const still = new Set(target?.rawListeners(event) ?? []);
        for (const listener of listeners) if (still.has(listener)) listener.apply(target, args);
      }
    } finally {
      this.requestClosing = was;
    }
  }

  /** Ends the hold of the socket (HTTP/1.1) or the stream (HTTP/2). */
  private releaseHold(): void {
    const h2 = this.h2;
    if (h2 === undefined) {
      this.releaseSocket(this.currentSocket());
      return;
    }
    h2.proxied.clear();
    this.releaseSocket(h2.stream as unknown as Socket);
  }

  /**
   * HTTP/2: whether a `'close'` or `'error'` of the stream now is to be kept from the
   * listeners added through `res.socket`: until the outcome is decided (the client may have
   * left: the app still writes into the sink, see `clientLeft`).
   */
  private streamHolding(): boolean {
    return (
      !this.closeReleased &&
      !this.ending &&
      !this.destroying &&
      !this.bypass &&
      !(this.started && !this.recording) &&
      !this.recorder.context.signal.aborted
    );
  }

  /** HTTP/2: the client reset the stream, or the session is gone. */
  private streamGone(): boolean {
    const stream = this.h2?.stream;
    return stream === undefined || stream.destroyed || stream.closed || stream.aborted;
  }

  /**
   * HTTP/2: holds the stream's `'close'` and `'error'` back from the listeners added through
   * `res.socket` or `req.socket` (see {@link StreamHold}), and takes the stream's `'aborted'` (the client
   * reset it) and `'close'` before the end as the client leaving, before anyone hears of it:
   * an end made from their listeners (the request's, or the app's own on `req.stream`) is a
   * body cut short (see `onEnd`).
   */
  holdStream(stream: StreamLike, request: IncomingMessage | undefined): void {
    const h2: StreamHold = { stream, proxied: new Set() };
    this.h2 = h2;
    const emit = stream.emit;
    const held = (event: string | symbol, args: unknown[]): boolean => {
      if ((event !== 'close' && event !== 'error') || h2.proxied.size === 0)
        return emit.call(stream, event, ...args);
      if (!this.streamHolding()) return emit.call(stream, event, ...args);
      const listeners = stream.rawListeners(event) as Listener[];
      const late = listeners.filter(
        (listener) =>
          h2.proxied.has(listener) || h2.proxied.has((listener as { listener?: unknown }).listener),
      );
      // An 'error' nobody else listens to must still throw as it would have.
      if (late.length === 0 || (event === 'error' && late.length === listeners.length))
        return emit.call(stream, event, ...args);
      for (const listener of late) stream.removeListener(event, listener);
      try {
        return emit.call(stream, event, ...args);
      } finally {
        for (const listener of late) stream.on(event, listener);
        this.defer(event, args, late);
      }
    };
    stream.emit = (event: string | symbol, ...args: unknown[]): boolean => {
      if (event !== 'aborted' && event !== 'close') return held(event, args);
      // The client reset the stream ('aborted'), or it closed: its listeners (node:http2's,
      // which emit the request's 'close' and 'aborted', and the app's own on `req.stream`)
      // learn that the client left, as the request's over HTTP/1.1 do: an end made from them
      // is a body cut short, never an outcome (see `onEnd`).
      this.requestClosed();
      const was = this.requestClosing;
      this.requestClosing = true;
      try {
        return held(event, args);
      } finally {
        this.requestClosing = was;
      }
    };
    // `res.socket` and `req.socket` (and so `on-finished`) give a proxy of node:http2's (one
    // for both, as node:http2's is) that notes the listeners of 'close' and 'error' added
    // through it; `res.socket` reads null while the sink stands in for it.
    const { res } = this;
    const fromRes = propertyOf(res, 'socket')?.get;
    if (fromRes)
      Object.defineProperty(res, 'socket', {
        configurable: true,
        enumerable: true,
        get: () =>
          this.sinking() && !this.ending ? null : this.socketProxy(h2, fromRes.call(res)),
      });
    const fromReq = request && propertyOf(request, 'socket')?.get;
    if (fromReq)
      Object.defineProperty(request, 'socket', {
        configurable: true,
        enumerable: true,
        get: () => this.socketProxy(h2, fromReq.call(request)),
      });
  }

  /**
   * The proxy given for node:http2's `socket` proxy `inner` (the same while it is the same),
   * whose `on` and `once` note the listeners of 'close' and 'error' (see {@link StreamHold}).
   */
  private socketProxy(h2: StreamHold, inner: unknown): unknown {
    if (!inner || typeof inner !== 'object') return inner;
    if (h2.inner === inner) return h2.proxy;
    h2.inner = inner;
    h2.proxy = new Proxy(inner, {
      get: (target, name) => {
        const value = Reflect.get(target, name) as unknown;
        if ((name !== 'on' && name !== 'once') || typeof value !== 'function') return value;
        return (event: string | symbol, listener: Listener) => {
          if ((event === 'close' || event === 'error') && this.streamHolding())
            h2.proxied.add(listener);
          return (value as Loose)(event, listener);
        };
      },
    });
    return h2.proxy;
  }

  // --- the client gone ---------------------------------------------------------------------

  private sinking(): boolean {
    return this.gone && !this.closeReleased;
  }

  private currentSocket(): Socket | null {
    return this.standing ? this.socket : this.res.socket;
  }

  // While the sink stands in for it, `res.socket` is null: code that checks the socket (as
  // `on-finished` does, `socket.writable`) sees a response still on its way, not a dead one.
  // Node marks a response whose socket closed `destroyed` and `closed` before it emits
  // 'close': both read false meanwhile. Set up only when the client leaves (accessors on
  // every response would slow down Node's own reads of them).
  private standIn(): void {
    if (this.standing) return;
    this.standing = true;
    const { res } = this;
    const sinking = () => this.sinking();
    // HTTP/2: `res.socket` reads null meanwhile already (see `holdStream`).
    if (!this.http2) {
      this.socket = res.socket;
      Object.defineProperty(res, 'socket', {
        configurable: true,
        enumerable: true,
        get: () => (sinking() && !this.ending ? null : this.socket),
        set: (next: Socket | null) => {
          this.socket = next;
        },
      });
      // Node 24 marks a response finished once its last write reaches the socket, which a
      // gone client's never does (Node 20 and 22 read it from the response's own state):
      // once the held end went out, it reads finished, so the app's `stream.pipeline` into
      // it completes when the held 'close' comes, as on Node 20.
      readWhile(res, 'writableFinished', () => this.released, true);
    }
    for (const name of ['destroyed', '_closed']) readFalseWhile(res, name, sinking);
  }

  private releaseClose(): void {
    if (this.sinking()) {
      this.closeReleased = true;
      this.closeSent = true;
      // The client left: an end made from the listeners of the held 'close' (the lease lost
      // before the app ended) is a body cut short, as one from the request's 'close'.
      const was = this.requestClosing;
      this.requestClosing = true;
      try {
        if (this.finishHeld) this.emit.call(this.res, 'finish');
        this.emit.call(this.res, 'close');
      } finally {
        this.requestClosing = was;
      }
    }
    this.releaseHold();
  }

  // --- the response's status and head ------------------------------------------------------

  /**
   * Starts the record with the head as it is now, plus `extra`, the headers given to
   * `writeHead`. Answers the generation header's value when `inHead` (a `writeHead` call that
   * can carry it, see `withGeneration`) and the response is a published stream: the caller
   * then gives it to `writeHead` with `extra`; otherwise it is set here (`setHeader`).
   * `phrase`: the reason phrase given to `writeHead` (else `res.statusMessage` is the one).
   */
  start(extra?: unknown, inHead = false, phrase?: string): string | undefined {
    if (this.started || this.bypass) return undefined;
    this.started = true;
    const { res, recorder } = this;
    if (this.isHandlerOutcome && !this.isHandlerOutcome(res.statusCode)) {
      this.bypass = true;
      void recorder.fail(new Error(`A ${res.statusCode} answered before the handler ran`));
      return;
    }
    try {
      const startFrom = startFromOf(recorder);
      const source =
        startFrom && nodeHeadSource(res, extra, this.http2 ? undefined : customReason(res, phrase));
      if (source) {
        this.recording = (startFrom as NonNullable<typeof startFrom>)(res.statusCode, source);
        // A reason phrase past U+007F too: the replay sends it as Latin-1 (see `sendPrepared`).
        if ((source.pastAscii || pastAsciiText(source.reason())) && !this.http2)
          sendsHeadAsLatin1(res);
      } else {
        const headers = headersOf(res, extra);
        this.recording = recorder.start(res.statusCode, headers);
        if (!this.http2 && hasPastAscii(headers)) sendsHeadAsLatin1(res);
      }
      // A live stream names its generation, for a client that resumes it.
      const generation = liveGenerationOf(recorder);
      let given: string | undefined;
      if (generation !== undefined && !res.headersSent) {
        // A `setHeader` now would change how Node's `writeHead` merges `extra` (see
        // `keepsRepeats`), after the head was read as Node would have sent it.
        if (inHead) given = String(generation);
        else res.setHeader(GENERATION_HEADER, String(generation));
      }
      const view = generation === undefined ? undefined : liveCaptureOf(recorder);
      if (view) this.startAhead(view);
      return given;
    } catch (error) {
      // Reading the head failed (not the outcome policy: one that throws makes the response
      // final, see `createRecorder`): the key is released and the response is no longer
      // ours, so the app's error handling can still answer it (unrecorded).
      this.bypass = true;
      void recorder.fail(error);
      throw error;
    }
  }

  // --- reading a published response ahead of the first client -----------------------------

  // A published response: the app's writes go into the capture, the first client's socket
  // is fed from it at its own pace (one write outstanding beyond what it took).
  private startAhead(view: Uint8Array): void {
    const state: LiveAhead = { view, delivered: 0, sendable: 0, waiting: false };
    this.ahead = state;
    // Code that checks before writing (`pipe` does) sees no backpressure either.
    readFalseWhile(this.res, 'writableNeedDrain', () => this.ahead === state);
    const lease = this.recorder.context.signal;
    state.lost = () => {
      if (this.ahead === state) this.handOver(state.view);
    };
    lease.addEventListener('abort', state.lost, { once: true });
  }

  /** Gives the first client what it may have of the capture, unless its socket is full. */
  private feed(state: LiveAhead): void {
    if (state.waiting || this.sinking() || state.sendable <= state.delivered) return;
    const part = state.view.subarray(state.delivered, state.sendable);
    state.delivered = state.sendable;
    if (this.write.call(this.res, part)) return;
    state.waiting = true;
    this.res.once('drain', () => {
      state.waiting = false;
      if (this.ahead === state) this.feed(state);
    });
  }

  /** Stops reading ahead, with the capture as `view` says it is; the app's pace from now. */
  stopAhead(): LiveAhead | undefined {
    const state = this.ahead;
    if (state === undefined) return undefined;
    this.ahead = undefined;
    if (state.lost) this.recorder.context.signal.removeEventListener('abort', state.lost);
    return state;
  }

  // Back to the first client's pace (past the cap, or the lease lost): what it was not given
  // yet goes to its socket first (or is held with the chunks the recorder holds), then
  // `chunk`, the one just captured. Answers whether the socket takes more now.
  private handOver(before: Uint8Array, chunk?: Buffer, send = false): boolean {
    const state = this.stopAhead();
    if (!state || this.sinking()) return true;
    const { res, held } = this;
    let ok = true;
    if (state.sendable > state.delivered)
      ok = this.write.call(res, before.subarray(state.delivered, state.sendable)) as boolean;
    const rest = before.subarray(state.sendable);
    if (rest.length > 0) held.push(Buffer.from(rest.buffer, rest.byteOffset, rest.byteLength));
    if (chunk && chunk.length > 0) held.push(chunk);
    if (send) for (const buffer of held.splice(0)) ok = this.write.call(res, buffer) as boolean;
    return ok;
  }

  /** Takes one captured chunk while reading ahead; answers what `write` answers. */
  private tookAhead(state: LiveAhead, chunk: Buffer, send: boolean, flush: boolean): boolean {
    const after = liveCaptureOf(this.recorder);
    if (!after) return this.handOver(state.view, chunk, send);
    state.view = after;
    if (send) state.sendable = after.length;
    if (flush) this.feed(state);
    return true;
  }

  // --- the replaced methods of `res` -------------------------------------------------------

  onEmit(event: string | symbol, args: unknown[]): boolean {
    if (event === 'close') {
      // The client went away first (see `clientLeft`).
      if (this.inFlight()) {
        if (this.clientLeft()) return true;
      } else if (this.gone && (!this.closeReleased || this.closeSent)) {
        // The client's leaving was seen on the connection first: Node's own 'close' is held
        // back as well (`releaseClose` emits it), and never emitted twice.
        return true;
      }
      this.closeSent = true;
    } else if (this.http2 && event === 'finish') {
      // HTTP/2: the stream closed before the end (the client reset it), announced with a
      // 'finish' before the 'close': the client went away first, both are held back (the
      // reset may have been seen first, from the stream's 'aborted').
      if (this.inFlight() ? this.clientLeft() : this.sinking()) {
        this.finishHeld = true;
        return true;
      }
    }
    return this.emit.call(this.res, event, ...args);
  }

  /** Neither ended, destroyed, bypassed, nor left by its client. */
  private inFlight(): boolean {
    return !this.ending && !this.destroying && !this.bypass && !this.gone;
  }

  /**
   * The client went away before the end. A response that will be recorded (or whose status
   * is not known yet) must run to its end: its 'close' is held back and the sink takes the
   * app's output (answers true). One that will not be recorded, or whose lease is lost, may
   * stop now (answers false).
   */
  private clientLeft(): boolean {
    this.gone = true;
    this.recorder.clientGone();
    const { signal } = this.recorder.context;
    if ((this.started && !this.recording) || signal.aborted) {
      this.closeReleased = true;
      return false;
    }
    this.standIn();
    signal.addEventListener('abort', () => this.releaseClose(), { once: true });
    // A writer that saw `write` answer false waits for this.
    this.emit.call(this.res, 'drain');
    return true;
  }

  /**
   * A pipelined response gets its socket when the ones before it are done, and Node emits
   * neither 'close' nor 'drain' on it when the client leaves before then: the connection's
   * 'close' (or the request's, see `requestClosed`) says so instead.
   */
  awaitSocket(connection: Socket | null | undefined): void {
    let left: (() => void) | undefined;
    if (connection?.destroyed) this.leftWaiting();
    else if (connection) {
      left = () => this.leftWaiting();
      (left as (() => void) & { [UNHELD]?: true })[UNHELD] = true;
      connection.on('close', left);
    }
    this.res.once('socket', (assigned: Socket) => {
      if (left) connection?.removeListener('close', left);
      this.holdSocket(assigned);
      // A socket that closed before it was assigned never emits 'close' again.
      if (assigned.destroyed) this.leftWaiting();
    });
  }

  /** The client left while the response was waiting for its socket. */
  private leftWaiting(): void {
    if (this.inFlight()) this.clientLeft();
  }

  /**
   * The request's 'close' or 'aborted' is about to be emitted: for a response that has no
   * socket yet, whose connection is gone, the client left (before the app's listeners run,
   * so an end from them is not recorded, see `onEnd`).
   */
  requestClosed(): void {
    if (!this.inFlight()) return;
    // HTTP/2: the stream says it (its `res.socket` is a proxy of the session's socket, alive
    // while other streams go on).
    if (this.http2) {
      if (this.streamGone()) this.clientLeft();
      return;
    }
    if (this.res.socket) return;
    const request = (this.res as ServerResponse & { req?: IncomingMessage }).req;
    if (request?.socket?.destroyed) this.clientLeft();
  }

  onWriteHead(statusCode: number, rest: unknown[]): unknown {
    const { res } = this;
    // HTTP/2: Node makes the head on the first chunk it is given (or the end), which idem
    // may hold until the outcome is stored: it goes out as it was when recorded, whatever
    // the app changed meanwhile (a status, a header: a late error path reading `headersSent`).
    const head = this.h2Head;
    if (head !== undefined) {
      this.h2Head = undefined;
      if (!this.bypass && !res.headersSent) {
        for (const name of res.getHeaderNames())
          if (!(name in head.headers)) res.removeHeader(name);
        for (const [name, value] of Object.entries(head.headers))
          if (value !== undefined) res.setHeader(name, value);
        res.statusCode = head.status;
        return this.writeHead.call(res, head.status);
      }
    }
    // Not the first head (Node refuses it as it always does), or not ours.
    if (this.bypass || res.headersSent) return this.writeHead.call(res, statusCode, ...rest);
    res.statusCode = statusCode;
    // As Node reads it: `writeHead(status, message?, headers?)`, the headers in the second
    // place when no message is given (`writeHead(201, undefined, headers)` included).
    const at = typeof rest[0] === 'string' || rest[1] != null ? 1 : 0;
    const extra = rest[at];
    const generation = this.start(
      extra,
      !this.http2 && canCarry(extra),
      typeof rest[0] === 'string' ? rest[0] : undefined,
    );
    if (this.bypass) return this.writeHead.call(res, statusCode, ...rest);
    let args = rest;
    if (generation !== undefined) {
      args = at === 1 ? [rest[0], undefined] : [undefined];
      args[at] = withGeneration(extra as object, generation);
    }
    try {
      return this.writeHead.call(res, statusCode, ...args);
    } catch (error) {
      // Node refused the head (a header value with a control character, an odd-length
      // header array, a status out of range): nothing of it was sent.
      this.refused(error);
      throw error;
    }
  }

  /**
   * Node refused the head the recorder started with: the key is released, nothing is
   * recorded, and the response passes through unrecorded, so the app's error handling
   * answers it as it would without idem.
   */
  private refused(error: unknown): void {
    this.bypass = true;
    this.stopAhead();
    void this.recorder.fail(error);
    this.releaseClose();
  }

  /**
   * The head Node makes on the first `write` or `end`, made now: Node validates it (the
   * status, the status message) before anything of the response is captured, and refuses
   * it through `writeHead` (see `refused`). Only the header text is stored, nothing is sent:
   * Node sends it with the first chunk. `length` is the body length Node would take from an
   * `end` that comes first (a `write` sets none).
   */
  private implicitHead(length?: number): void {
    const res = this.res as ServerResponse & { _contentLength?: number; _implicitHeader(): void };
    // HTTP/2 has no head to make ahead: its status was checked when set, its head goes
    // out with the first chunk (or the end), as it is now (see `onWriteHead`).
    if (this.bypass || res.headersSent) return;
    if (this.http2) {
      this.h2Head = { status: res.statusCode, headers: res.getHeaders() };
      return;
    }
    if (length !== undefined) res._contentLength = length;
    res._implicitHeader();
  }

  onWrite(chunk: Chunk, encoding?: BufferEncoding | Callback, cb?: Callback): boolean {
    // A chunk Node refuses (null, a number): it throws before making any head, nothing of
    // the response starts (the app's error handling can still answer it, unrecorded or not).
    if (!isChunk(chunk)) return this.write.call(this.res, chunk, encoding, cb) as boolean;
    if (!this.started) {
      this.start();
      this.implicitHead();
    }
    const { res } = this;
    if (this.bypass) return this.write.call(res, chunk, encoding, cb) as boolean;
    if (this.ending) {
      if (this.released || this.recorder === SETTLED)
        return this.write.call(res, chunk, encoding, cb) as boolean;
      // The real end waits for the record: a write now would reach the client ahead of the
      // held body. Pass it on after the end, where Node refuses it as it always does.
      this.late ??= [];
      this.late.push([false, chunk, encoding, cb]);
      return false;
    }
    const callback = typeof encoding === 'function' ? encoding : cb;
    const buffer = toBuffer(chunk, typeof encoding === 'string' ? encoding : undefined);
    const sendNow = this.recorder.capture(buffer);
    if (this.ahead) {
      const ok = this.tookAhead(this.ahead, buffer, sendNow, true);
      if (callback) process.nextTick(callback);
      return ok;
    }
    if (this.sinking()) {
      if (callback) process.nextTick(callback);
      // Past the cap, its client gone: nothing will be recorded, nobody reads it. Let it go (the
      // held 'close' reaches the app, which stops its body) rather than drain it to `maxHoldMs`.
      if (giveUpUnrecorded(this.recorder)) this.releaseClose();
      return true;
    }
    const { held } = this;
    if (sendNow) {
      if (held.length > 0) for (const before of held.splice(0)) this.write.call(res, before);
      return this.write.call(res, buffer, callback) as boolean;
    }
    held.push(buffer);
    if (callback) queueMicrotask(() => callback());
    return true;
  }

  onEnd(
    chunk?: Chunk | Callback,
    encoding?: BufferEncoding | Callback,
    cb?: Callback,
  ): ServerResponse {
    const { res, recorder } = this;
    if (this.ending) {
      if (this.released || this.recorder === SETTLED)
        return this.end.call(res, chunk, encoding, cb) as ServerResponse;
      // As a late write: Node gets it after the real end (calls its callback, refuses a chunk).
      this.late ??= [];
      this.late.push([true, chunk, encoding, cb]);
      return res;
    }
    if (
      this.requestClosing &&
      !this.bypass &&
      (this.gone || (this.http2 ? this.streamGone() : this.currentSocket()?.destroyed))
    ) {
      // Ended from the request's 'close' after the client left: a body cut short, never
      // recorded. The key is released; a retry runs the handler again.
      this.bypass = true;
      this.stopAhead();
      void recorder.fail(new Error('The response was ended because the client left'));
      const result = this.end.call(res, chunk, encoding, cb);
      this.releaseClose();
      this.recorder = SETTLED;
      return result as ServerResponse;
    }
    // A chunk Node refuses (`end(123)`): it throws before making any head or ending.
    if (chunk && typeof chunk !== 'function' && !isChunk(chunk))
      return this.end.call(res, chunk, encoding, cb) as ServerResponse;
    const first = !this.started;
    this.start();
    if (this.bypass) {
      this.releaseHold();
      const ended = this.end.call(res, chunk, encoding, cb) as ServerResponse;
      // Passed through, and every later call does: nothing asks the recorder again.
      this.recorder = SETTLED;
      return ended;
    }
    let callback = cb;
    if (typeof chunk === 'function') {
      callback = chunk;
      chunk = undefined;
    } else if (typeof encoding === 'function') {
      callback = encoding;
      encoding = undefined;
    }
    // Node takes a falsy chunk (`''`, `0`) as none.
    const buffer = !chunk ? undefined : toBuffer(chunk, encoding as BufferEncoding | undefined);
    // An `end` that comes first: its chunk is the whole body, as Node counts it.
    if (first) this.implicitHead(buffer === undefined ? 0 : buffer.length);
    this.ending = true;
    // Shared, and only a getter: one cached hidden-class transition, never an accessor pair
    // of its own a response (which would make every response's class a new one).
    if (this.endedWhileHeld) Object.defineProperty(res, 'writableEnded', ENDED);
    if (buffer !== undefined) {
      recorder.capture(buffer);
      // Read ahead: the capture holds it, sent with the rest of the capture after the record.
      if (this.ahead) this.tookAhead(this.ahead, buffer, false, false);
      else if (buffer.length > 0) this.held.push(buffer);
    }
    // The trailers the app added (`addTrailers`) are Node's to send with the end: recorded
    // with the outcome when its `Trailer` header declared them (see the recorder).
    if (this.recording) {
      const trailers = sentTrailers(res, this.http2);
      if (trailers.length > 0) trailersOf(recorder)?.(trailers);
    }
    // As they stand now: what the held end sends (see `ended`), whatever the app adds meanwhile.
    this.trailers = trailerState(res, this.http2);
    // Ended by a timer set outside the held handler (a request timeout) while it ran: never
    // its own answer, however soon it settles after this (see ENDED_OUTSIDE).
    if (endedOutsideHeld(recorder)) endedOutsideOf(recorder)?.();
    recorder.finish().then(
      () => this.ended(callback),
      (error: unknown) => this.failed(error),
    );
    // Judged once held work settled (a timeout outside answered): what the app writes meanwhile.
    const heldAfterEnd = heldAfterEndOf(recorder);
    if (heldAfterEnd?.()) watchLateWrites(res, heldAfterEnd, () => this.sendingEnd);
    return res;
  }

  /** The outcome is recorded: the held end goes out. */
  private ended(callback: Callback | undefined): void {
    const { res, held } = this;
    // What the first client was not given yet goes with the end.
    const state = this.stopAhead();
    if (state && state.view.length > state.delivered) {
      const rest = state.view.subarray(state.delivered);
      held.push(Buffer.from(rest.buffer, rest.byteOffset, rest.byteLength));
    }
    this.released = true;
    restoreTrailers(res, this.trailers);
    this.trailers = undefined;
    // The last held chunk goes with the end: one write, as a plain `end(chunk)` makes.
    const last = held.pop();
    // Node's end makes the head through `res.writeHead` when none went out: not the app's write.
    this.sendingEnd = true;
    try {
      for (const buffer of held) this.write.call(res, buffer);
      if (last) this.end.call(res, last, callback);
      else this.end.call(res, callback);
    } finally {
      this.sendingEnd = false;
    }
    const late = this.late;
    this.late = undefined;
    if (late)
      for (const [end, chunk, encoding, cb] of late)
        (end ? this.end : this.write).call(res, chunk, encoding, cb);
    this.releaseClose();
    this.settle();
    const destroy = this.destroyAfterEnd;
    this.destroyAfterEnd = undefined;
    if (destroy) this.destroy.call(res, destroy.error);
  }

  /** Settled (see {@link SETTLED}): nothing of the execution is held from here on. */
  private settle(): void {
    this.recorder = SETTLED;
    this.held = [];
  }

  /**
   * Recording failed: the response is destroyed, never ended. The writes and ends the app
   * made while the end was held go to Node after the destroy, as every later one does (see
   * `onWrite`): Node answers them as for a destroyed response (their callbacks get
   * ERR_STREAM_DESTROYED), none is kept.
   */
  private failed(error: unknown): void {
    const { res } = this;
    this.stopAhead();
    this.destroy.call(res, error instanceof Error ? error : new Error(String(error)));
    this.releaseClose();
    this.settle();
    const late = this.late;
    this.late = undefined;
    if (late)
      for (const [end, chunk, encoding, cb] of late)
        (end ? this.end : this.write).call(res, chunk, encoding, cb);
  }

  onDestroy(error?: Error): unknown {
    // The app ended its response and then destroys it (a handler that failed after its own
    // end, Nest's `@Res()` error path, a `pipeline` that breaks after the end): Node would
    // have sent the end first. The end is held while the outcome is recorded: the destroy
    // waits for it (see `ended`), or the client of an outcome recorded would get it broken.
    if (this.ending && !this.released && !this.destroying && !this.bypass) {
      this.destroyAfterEnd ??= { error };
      return this.res;
    }
    // Node 22 and later destroy a pipelined response still waiting for its socket when the
    // connection closes (`abortOutgoing`, with an ECONNRESET 'aborted'), before the
    // connection's other 'close' listeners run: its client left. A response that will be
    // recorded runs to its end into the sink, as on Node 20, where no destroy comes.
    if (!this.res.socket && isAbortOutgoing(error)) {
      if (this.inFlight() ? this.clientLeft() : this.gone && !this.closeReleased) return this.res;
    }
    // The app destroyed a response it had not ended: never recorded, the key is released.
    const abandoned = !this.ending && !this.destroying && !this.bypass;
    if (abandoned) void this.recorder.fail(error);
    this.stopAhead();
    this.destroying = true;
    const result = this.destroy.call(this.res, error);
    this.releaseClose();
    // Settled: what the app does after its destroy goes straight to Node, which refuses it
    // as it would without idem (an end marks the response ended at once, a write makes no head).
    if (abandoned) {
      this.bypass = true;
      this.settle();
    }
    return result;
  }
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
 * of `on-finished`, which `res.sendFile` and Koa use; over HTTP/2, where `res.socket` is a
 * proxy of the response's stream, the stream's events, from the listeners added through
 * `res.socket` or `req.socket`, the session's socket left alone), and `res.socket` reads null while the sink
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
  const recording = new ResponseRecording(
    res,
    recorder,
    options.isHandlerOutcome,
    options.endedWhileHeld === true,
  );
  const request = (res as ServerResponse & { req?: IncomingMessage }).req;
  // An HTTP/2 response has no socket to hold: its `socket` is a proxy of its stream (and of
  // the connection's socket, shared by every stream of it); its stream is held instead, and
  // the stream's own 'close' comes to the response (see `onEmit`).
  if (!recording.http2) {
    const initial = res.socket;
    if (initial) recording.holdSocket(initial);
    // A pipelined response gets its socket when the ones before it are done.
    else recording.awaitSocket(request?.socket);
  } else {
    const stream = (res as ServerResponse & { stream?: StreamLike }).stream;
    if (stream) recording.holdStream(stream, request);
  }

  // The request's 'close' and 'aborted' say the client left: an app that ends the response
  // from them cut its body short. That end is not an outcome (see `onEnd`).
  if (request) {
    readyForOwnMethods(request);
    const emitRequest = request.emit as Emit;
    request.emit = function emit(event: string | symbol, ...args: unknown[]) {
      if (event !== 'close' && event !== 'aborted')
        return emitRequest.call(request, event, ...args);
      recording.requestClosed();
      // Inside the stream's 'aborted' (HTTP/2) it is already set: kept for its listeners.
      const was = recording.requestClosing;
      recording.requestClosing = true;
      try {
        return emitRequest.call(request, event, ...args);
      } finally {
        recording.requestClosing = was;
      }
    } as IncomingMessage['emit'];
  }

  readyForOwnMethods(res);
  res.emit = function emit(event: string | symbol, ...args: unknown[]) {
    return recording.onEmit(event, args);
  } as ServerResponse['emit'];
  res.writeHead = function writeHead(statusCode: number, ...rest: unknown[]) {
    return recording.onWriteHead(statusCode, rest);
  } as ServerResponse['writeHead'];
  res.write = function write(chunk: Chunk, encoding?: BufferEncoding | Callback, cb?: Callback) {
    return recording.onWrite(chunk, encoding, cb);
  } as ServerResponse['write'];
  res.end = function end(
    chunk?: Chunk | Callback,
    encoding?: BufferEncoding | Callback,
    cb?: Callback,
  ) {
    return recording.onEnd(chunk, encoding, cb);
  } as ServerResponse['end'];
  res.destroy = function destroy(error?: Error) {
    return recording.onDestroy(error);
  } as ServerResponse['destroy'];
}

/** The methods by which an app writes a Node response (Express's `res.json()` ends in them). */
const WRITE_METHODS = ['setHeader', 'writeHead', 'write', 'end'] as const;

/**
 * Tells the recorder (see `HELD_AFTER_END`) of each write to `res` (or attempt: one after the
 * end throws or is refused) made while it waits for held work to judge the end that went out.
 */
function watchLateWrites(
  res: ServerResponse,
  heldAfterEnd: (wrote?: boolean) => boolean,
  sendingEnd: () => boolean,
): void {
  const target = res as unknown as Record<string, unknown>;
  for (const name of WRITE_METHODS) {
    const method = target[name];
    if (typeof method !== 'function') continue;
    target[name] = function (this: unknown, ...args: unknown[]) {
      if (!sendingEnd()) heldAfterEnd(true);
      return (method as (...args: unknown[]) => unknown).apply(this, args);
    };
  }
}
