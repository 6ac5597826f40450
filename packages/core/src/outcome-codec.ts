import type { JsonValue } from './canonical-json.js';
import { InvalidInputError, OutcomeCorruptError } from './errors.js';
import { utf8Length } from './utf8.js';

/**
 * What a store keeps for a completed execution: opaque body bytes plus JSON metadata
 * (a status code, headers, a content type, how the value was serialised).
 */
export interface StoredOutcome {
  meta: { readonly [key: string]: JsonValue | undefined };
  body: Uint8Array;
}

// "IDM" + format version 1
const MAGIC = [0x49, 0x44, 0x4d, 0x01] as const;
const HEADER = MAGIC.length + 4;
const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

/**
 * Encodes an outcome as one byte string: a 4-byte magic and version, the metadata JSON's
 * length (4 bytes, big-endian), the metadata JSON, then the body bytes untouched. Every store
 * keeps these bytes as they are, so binary bodies round-trip exactly on every store.
 * @throws InvalidInputError when the body is not a `Uint8Array` or the metadata not an
 *   object, TypeError when the metadata cannot be written as JSON (a BigInt, a cycle)
 */
export function encodeOutcome(outcome: StoredOutcome): Uint8Array {
  return encodeOutcomeWith(outcome, false);
}

/**
 * {@link encodeOutcome}; with `reuse`, the bytes may be a view of a buffer this module reuses
 * (see {@link isReusedBuffer}).
 * @internal
 */
export function encodeOutcomeWith(outcome: StoredOutcome, reuse: boolean): Uint8Array {
  if (!(outcome?.body instanceof Uint8Array))
    throw new InvalidInputError('An outcome body must be a Uint8Array');
  const { meta: value, body } = outcome;
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw new InvalidInputError('An outcome meta must be a JSON object');
  // Throws TypeError for what JSON cannot carry (a BigInt, a cycle).
  const json = JSON.stringify(value);
  const metaLength = utf8Length(json);
  const out = withHeader(json, metaLength, body.length, reuse);
  try {
    out.set(body, HEADER + metaLength);
  } catch (error) {
    // A body that cannot be read (its buffer detached): the lent buffer is free again.
    giveBackReused(out);
    throw error;
  }
  return out;
}

/**
 * The encoding of an outcome whose metadata JSON is `metaJson` and whose body is the UTF-8
 * of `text`: the bytes `encodeOutcome` makes for them, in one allocation (none with `reuse`
 * when the reused buffer is free and large enough: see {@link isReusedBuffer}).
 * @internal
 */
export function encodeTextOutcome(metaJson: string, text: string, reuse = false): Uint8Array {
  const metaLength = utf8Length(metaJson);
  const bodyStart = HEADER + metaLength;
  const out = withHeader(metaJson, metaLength, utf8Length(text), reuse);
  encoder.encodeInto(text, out.subarray(bodyStart));
  return out;
}

/**
 * {@link encodeTextOutcome} with its header (magic, length and metadata: what
 * `encodeTextOutcome(metaJson, '')` gives) made once by the caller. Into the reused buffer,
 * the body's UTF-8 is written without counting it first.
 * @internal
 */
export function encodeTextWithHeader(head: Uint8Array, text: string, reuse: boolean): Uint8Array {
  const room = head.length + 3 * text.length;
  if (reuse && lent === undefined && room <= REUSED_MAX) {
    if (reused === undefined || reused.length < room) {
      reused = new Uint8Array(room <= 4_096 ? 4_096 : REUSED_MAX);
      reusedBody = undefined;
    }
    reused.set(head, 0);
    // The view the body is written into, made once per buffer and header length.
    if (reusedBody === undefined || reusedBody.byteOffset !== head.length)
      reusedBody = reused.subarray(head.length);
    // At most 3 bytes a UTF-16 unit: the whole text fits.
    const { written } = encoder.encodeInto(text, reusedBody);
    lent = reused.subarray(0, head.length + written);
    return lent;
  }
  const out = bytesFor(head.length + utf8Length(text), reuse);
  out.set(head, 0);
  encoder.encodeInto(text, out.subarray(head.length));
  return out;
}

// An encoding handed straight to a store whose synchronous `complete` copies what it keeps
// (the memory store) is written into one buffer, reused: an off-heap allocation costs about
// as much as the rest of the encoding, and more garbage collection. The buffer is taken by
// one encoding at a time, from its making until the engine gave it back (once the store
// call returned, or its bytes were copied for retries): an encoding made meanwhile (by code
// an event listener runs) gets fresh bytes. Outcomes above REUSED_MAX always do.
const REUSED_MAX = 65_536;
let reused: Uint8Array | undefined;
/** `reused` past a header: where `encodeTextWithHeader` writes the body. */
let reusedBody: Uint8Array | undefined;
/** The view of `reused` handed out and not given back yet. */
let lent: Uint8Array | undefined;

/** `size` bytes: a view of the reused buffer when it is free and large enough, else fresh. */
function bytesFor(size: number, reuse: boolean): Uint8Array {
  if (!reuse || lent !== undefined || size > REUSED_MAX) return new Uint8Array(size);
  if (reused === undefined || reused.length < size) {
    reused = new Uint8Array(size <= 4_096 ? 4_096 : REUSED_MAX);
    reusedBody = undefined;
  }
  lent = reused.subarray(0, size);
  return lent;
}

/**
 * Whether `bytes` are the view of the reused encoding buffer lent out: valid only until they
 * are given back ({@link giveBackReused}); whoever keeps them or hands them on copies them.
 * @internal
 */
export function isReusedBuffer(bytes: Uint8Array): boolean {
  return bytes === lent;
}

/** Frees the reused buffer when `bytes` are its view (the engine is done with them). @internal */
export function giveBackReused(bytes: Uint8Array): void {
  if (bytes === lent) lent = undefined;
}

/** A new encoding buffer with the header and metadata written, room for the body after them. */
function withHeader(
  json: string,
  metaLength: number,
  bodyLength: number,
  reuse: boolean,
): Uint8Array {
  const out = bytesFor(HEADER + metaLength + bodyLength, reuse);
  out[0] = MAGIC[0];
  out[1] = MAGIC[1];
  out[2] = MAGIC[2];
  out[3] = MAGIC[3];
  out[4] = metaLength >>> 24;
  out[5] = (metaLength >>> 16) & 0xff;
  out[6] = (metaLength >>> 8) & 0xff;
  out[7] = metaLength & 0xff;
  if (metaLength === json.length) {
    // ASCII (the usual metadata): one byte a character.
    for (let i = 0; i < metaLength; i++) out[HEADER + i] = json.charCodeAt(i);
  } else {
    encoder.encodeInto(json, out.subarray(HEADER, HEADER + metaLength));
  }
  return out;
}

/**
 * Decodes bytes made by {@link encodeOutcome}. The body is a copy, never a view into
 * `bytes` (also when `bytes` is a `Buffer`, whose `slice` makes views), so callers cannot
 * alter a store's copy through it.
 * @throws OutcomeCorruptError when the bytes are not a valid encoding
 */
export function decodeOutcome(bytes: Uint8Array): StoredOutcome {
  const { meta, bodyStart } = decodeMeta(bytes);
  return { meta, body: new Uint8Array(bytes.subarray(bodyStart)) };
}

/**
 * {@link decodeOutcome} with the body as a view into `bytes`, for a caller that owns `bytes`
 * and only reads the body before letting go of it. When the metadata is exactly `known.json`
 * (ASCII, under 64 KiB), `known.meta` stands for it unparsed: a caller that never changes
 * the metadata can skip parsing the one its own writes always have.
 * @internal
 */
export function decodeOutcomeView(
  bytes: Uint8Array,
  known?: { readonly json: string; readonly meta: StoredOutcome['meta'] },
): StoredOutcome {
  if (known && hasMeta(bytes, known.json)) {
    return { meta: known.meta, body: bytes.subarray(HEADER + known.json.length) };
  }
  const { meta, bodyStart } = decodeMeta(bytes);
  return { meta, body: bytes.subarray(bodyStart) };
}

/** Whether `bytes` is an encoding whose metadata is exactly the ASCII JSON `json`. */
function hasMeta(bytes: Uint8Array, json: string): boolean {
  const length = json.length;
  if (bytes.length < HEADER + length) return false;
  for (let i = 0; i < 4; i++) if (bytes[i] !== MAGIC[i]) return false;
  if (bytes[4] !== 0 || bytes[5] !== 0 || bytes[6] !== length >>> 8 || bytes[7] !== (length & 0xff))
    return false;
  for (let i = 0; i < length; i++) if (bytes[HEADER + i] !== json.charCodeAt(i)) return false;
  return true;
}

/**
 * Where the body starts when `bytes` is an encoding whose metadata is exactly the ASCII JSON
 * `json` (under 64 KiB), else -1.
 * @internal
 */
export function knownMetaBodyStart(bytes: Uint8Array, json: string): number {
  return hasMeta(bytes, json) ? HEADER + json.length : -1;
}

function decodeMeta(bytes: Uint8Array): { meta: StoredOutcome['meta']; bodyStart: number } {
  if (
    bytes.length < HEADER ||
    bytes[0] !== MAGIC[0] ||
    bytes[1] !== MAGIC[1] ||
    bytes[2] !== MAGIC[2] ||
    bytes[3] !== MAGIC[3]
  ) {
    throw new OutcomeCorruptError('Stored outcome has an unknown format or version');
  }
  const metaLength = bytes[4]! * 2 ** 24 + bytes[5]! * 2 ** 16 + bytes[6]! * 2 ** 8 + bytes[7]!;
  const bodyStart = HEADER + metaLength;
  if (bodyStart > bytes.length) throw new OutcomeCorruptError('Stored outcome is truncated');
  let meta: StoredOutcome['meta'];
  try {
    meta = JSON.parse(decoder.decode(bytes.subarray(HEADER, bodyStart)));
  } catch (cause) {
    // Not the parser's message: V8 quotes the text it failed on (the recorded response's
    // metadata), and this message reaches logs and spans (the otelrev review).
    throw new OutcomeCorruptError('Stored outcome metadata is not valid JSON', { cause });
  }
  if (meta === null || typeof meta !== 'object' || Array.isArray(meta)) {
    throw new OutcomeCorruptError('Stored outcome metadata is not an object');
  }
  return { meta, bodyStart };
}
