import { nodeBuffer } from './platform.js';
import { sha256Hex } from './sha256.js';
import { utf8Length } from './utf8.js';

/** One part of a length-prefixed encoding: a name and its bytes (strings are UTF-8). */
export type EncodedPart = readonly [name: string, value: string | Uint8Array];

/** Buffers to encode into, and UTF-8 written into them at `at` (returns the bytes written). */
export interface TextWriter {
  alloc(size: number): Uint8Array;
  writeUtf8(buf: Uint8Array, text: string, at: number): number;
}

const NodeBuffer = nodeBuffer();
const encoder = new TextEncoder();

/** UTF-8 through Node's `Buffer` (Node, Bun, Deno): the fastest for the short strings of a key. */
const bufferWriter: TextWriter | undefined = NodeBuffer && {
  alloc: (size) => NodeBuffer.allocUnsafe(size),
  writeUtf8: (buf, text, at) =>
    (buf as ReturnType<typeof NodeBuffer.allocUnsafe>).write(text, at, 'utf8'),
};

/** UTF-8 through the Web's `TextEncoder`, where there is no `Buffer`. */
const webWriter: TextWriter = {
  alloc: (size) => new Uint8Array(size),
  writeUtf8: (buf, text, at) => encoder.encodeInto(text, buf.subarray(at)).written,
};

/** Strings up to this length get room for their longest UTF-8 form rather than a count. */
const ESTIMATED = 4_096;

// The encoding is written into one scratch buffer, reused: the hash reads it before
// digestParts returns, and nothing else runs meanwhile. A buffer a call needs that is larger
// than SCRATCH_MAX is its own, so a huge part is not held on to.
const SCRATCH_MAX = 65_536;

/** Writes `length` as 8 bytes, big-endian, at `at`. */
function putLength(buf: Uint8Array, at: number, length: number): void {
  const high = Math.floor(length / 2 ** 32);
  buf[at] = high >>> 24;
  buf[at + 1] = high >>> 16;
  buf[at + 2] = high >>> 8;
  buf[at + 3] = high;
  buf[at + 4] = length >>> 24;
  buf[at + 5] = length >>> 16;
  buf[at + 6] = length >>> 8;
  buf[at + 7] = length;
}

/** Lengths of the storage key's encoding whose views of the scratch buffer are kept. */
const VIEWS_CACHED = 512;

/** Strings up to this length are written by hand while they are ASCII (most keys and scopes). */
const SHORT = 64;

/**
 * The UTF-8 of `value` at `at`; returns the bytes written. A short ASCII string (whose UTF-8
 * is its character codes) is copied in a loop, cheaper than a call into the runtime.
 */
function writeText(text: TextWriter, buf: Uint8Array, value: string, at: number): number {
  const length = value.length;
  if (length <= SHORT) {
    let i = 0;
    for (; i < length; i++) {
      const unit = value.charCodeAt(i);
      if (unit >= 0x80) break;
      buf[at + i] = unit;
    }
    if (i === length) return length;
  }
  return text.writeUtf8(buf, value, at);
}

/** `buf`'s memory as a plain `Uint8Array`. */
function plainOf(buf: Uint8Array): Uint8Array {
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.length);
}

/** Room for `value`: its UTF-8 length, or an upper bound of it (3 bytes a UTF-16 unit). */
function room(value: string | Uint8Array): number {
  if (typeof value !== 'string') return value.length;
  return value.length <= ESTIMATED ? value.length * 3 : utf8Length(value);
}

/** Writes `value` after room for its length prefix, then the prefix; returns the next offset. */
function put(text: TextWriter, buf: Uint8Array, at: number, value: string | Uint8Array): number {
  let length: number;
  if (typeof value === 'string') length = writeText(text, buf, value, at + 8);
  else {
    buf.set(value, at + 8);
    length = value.length;
  }
  putLength(buf, at, length);
  return at + 8 + length;
}

/**
 * `digestParts` over a given way of writing UTF-8 and hashing: the encoding is the same
 * bytes whichever the runtime offers, so every runtime derives the same keys.
 */
export function createDigestParts(
  text: TextWriter,
  hash: (data: Uint8Array) => string,
): (domain: string, parts: readonly EncodedPart[]) => string {
  let scratch = text.alloc(4_096);
  const bufferFor = (size: number): Uint8Array => {
    if (size > SCRATCH_MAX) return text.alloc(size);
    if (size > scratch.length) scratch = text.alloc(SCRATCH_MAX);
    return scratch;
  };
  return (domain, parts) => {
    let total = 8 + room(domain) + 8;
    for (const [name, value] of parts) total += 16 + room(name) + room(value);
    // One buffer, one hash: this runs twice on every request.
    const buf = bufferFor(total);
    let at = put(text, buf, 0, domain);
    putLength(buf, at, parts.length);
    at += 8;
    for (const [name, value] of parts) at = put(text, buf, put(text, buf, at, name), value);
    return hash(buf.subarray(0, at));
  };
}

/**
 * `digestParts(domain, [[first, a], [second, b]])` for a fixed domain and two fixed names,
 * as a function of the two values: the same bytes and digest, with the encoding of the domain,
 * the count and the first name written once into the buffer it reuses (the storage key's
 * digest, on every request).
 */
export function createPairDigest(
  text: TextWriter,
  hash: (data: Uint8Array) => string,
  domain: string,
  first: string,
  second: string,
): (a: string, b: string) => string {
  // The domain, the count and the first name: written once at the start of every buffer.
  const withHead = (size: number): { buf: Uint8Array; start: number } => {
    const buf = text.alloc(size);
    const at = put(text, buf, 0, domain);
    putLength(buf, at, 2);
    return { buf, start: put(text, buf, at + 8, first) };
  };
  const fixed = 32 + room(domain) + room(first);
  const { start } = withHead(fixed);
  // The second name with its length, copied in after the first value.
  const probe = text.alloc(8 + room(second));
  const secondPart = probe.subarray(0, put(text, probe, 0, second));
  let scratch = withHead(4_096).buf;
  // The same memory as a plain Uint8Array: its views are cheaper to make than a Buffer's.
  let plain = plainOf(scratch);
  // The views of `plain` that the hash reads, by length, each made once: making one costs
  // about a quarter of the hash itself. Only the first VIEWS_CACHED lengths (every key with
  // a short scope), so they stay a few tens of KiB at most.
  let views: (Uint8Array | undefined)[] = new Array(VIEWS_CACHED);
  return (a, b) => {
    const total = start + 8 + room(a) + secondPart.length + 8 + room(b);
    let buf = scratch;
    let bytes = plain;
    if (total > buf.length) {
      buf = withHead(Math.max(total, SCRATCH_MAX)).buf;
      bytes = plainOf(buf);
      if (total <= SCRATCH_MAX) {
        scratch = buf;
        plain = bytes;
        views = new Array(VIEWS_CACHED);
      }
    }
    let at = put(text, buf, start, a);
    buf.set(secondPart, at);
    at = put(text, buf, at + secondPart.length, b);
    if (bytes !== plain || at >= VIEWS_CACHED) return hash(bytes.subarray(0, at));
    let view = views[at];
    if (view === undefined) {
      view = bytes.subarray(0, at);
      views[at] = view;
    }
    return hash(view);
  };
}

/** The way this runtime writes UTF-8 into a buffer: Node's `Buffer` where it has one. */
export const textWriters = { buffer: bufferWriter, web: webWriter } as const;

/**
 * SHA-256 over an unambiguous encoding of named parts: every name and every value is
 * preceded by its byte length (8 bytes, big-endian), so no two different part lists encode
 * alike. ("a:b","c") and ("a","b:c") give different digests. The same bytes, and so the
 * same digest, on every runtime.
 *
 * @param domain a label that separates uses of the encoding (keys vs fingerprints)
 * @returns the digest, lowercase hex (64 characters)
 */
export const digestParts: (domain: string, parts: readonly EncodedPart[]) => string =
  createDigestParts(bufferWriter ?? webWriter, sha256Hex);

/**
 * The storage key's digest: `digestParts('idem/storage-key/v1', [['scope', scopeJson],
 * ['key', key]])`.
 * @internal
 */
export const storageKeyDigest: (scopeJson: string, key: string) => string = createPairDigest(
  bufferWriter ?? webWriter,
  sha256Hex,
  'idem/storage-key/v1',
  'scope',
  'key',
);
