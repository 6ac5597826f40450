import type { JsonValue } from './canonical-json.js';
import { InvalidInputError, OutcomeCorruptError } from './errors.js';

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
  if (!(outcome?.body instanceof Uint8Array))
    throw new InvalidInputError('An outcome body must be a Uint8Array');
  const { meta: value } = outcome;
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw new InvalidInputError('An outcome meta must be a JSON object');
  // Throws TypeError for what JSON cannot carry (a BigInt, a cycle).
  const meta = encoder.encode(JSON.stringify(value));
  const out = new Uint8Array(HEADER + meta.length + outcome.body.length);
  out.set(MAGIC, 0);
  new DataView(out.buffer).setUint32(MAGIC.length, meta.length);
  out.set(meta, HEADER);
  out.set(outcome.body, HEADER + meta.length);
  return out;
}

/**
 * Decodes bytes made by {@link encodeOutcome}. The body is a copy, never a view into
 * `bytes`, so callers cannot alter a store's copy through it.
 * @throws OutcomeCorruptError when the bytes are not a valid encoding
 */
export function decodeOutcome(bytes: Uint8Array): StoredOutcome {
  if (bytes.length < HEADER || MAGIC.some((b, i) => bytes[i] !== b)) {
    throw new OutcomeCorruptError('Stored outcome has an unknown format or version');
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const metaLength = view.getUint32(MAGIC.length);
  if (HEADER + metaLength > bytes.length)
    throw new OutcomeCorruptError('Stored outcome is truncated');
  let meta: StoredOutcome['meta'];
  try {
    meta = JSON.parse(decoder.decode(bytes.subarray(HEADER, HEADER + metaLength)));
  } catch (cause) {
    throw new OutcomeCorruptError(`Stored outcome metadata is not valid JSON: ${String(cause)}`);
  }
  if (meta === null || typeof meta !== 'object' || Array.isArray(meta)) {
    throw new OutcomeCorruptError('Stored outcome metadata is not an object');
  }
  return { meta, body: bytes.slice(HEADER + metaLength) };
}
