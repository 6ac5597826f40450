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
  /** Room for `value`: its UTF-8 length, or an upper bound of it (3 bytes a UTF-16 unit). */
  const room = (value: string | Uint8Array): number => {
    if (typeof value !== 'string') return value.length;
    return value.length <= ESTIMATED ? value.length * 3 : utf8Length(value);
  };
  /** Writes `value` after room for its length prefix, then the prefix; returns the next offset. */
  const put = (buf: Uint8Array, at: number, value: string | Uint8Array): number => {
    let length: number;
    if (typeof value === 'string') length = text.writeUtf8(buf, value, at + 8);
    else {
      buf.set(value, at + 8);
      length = value.length;
    }
    putLength(buf, at, length);
    return at + 8 + length;
  };
  return (domain, parts) => {
    let total = 8 + room(domain) + 8;
    for (const [name, value] of parts) total += 16 + room(name) + room(value);
    // One buffer, one hash: this runs twice on every request.
    const buf = bufferFor(total);
    let at = put(buf, 0, domain);
    putLength(buf, at, parts.length);
    at += 8;
    for (const [name, value] of parts) at = put(buf, put(buf, at, name), value);
    return hash(buf.subarray(0, at));
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
