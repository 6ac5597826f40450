import type { StoredOutcome } from '@idem/core';

/**
 * The bytes of a response being recorded, in one growing buffer, and the length of each
 * chunk (so a replay streams the same chunks), with the encoded outcome's size tracked as
 * it grows. Past `limit` it drops everything it held and only counts: the memory a
 * response costs stays bounded by the cap whatever the body's size or chunk count.
 * @internal
 */
export class CaptureBuffer {
  private bytes: Uint8Array = new Uint8Array(0);
  private lengths: number[] = [];
  /** Body bytes seen, held or not. */
  size = 0;
  /**
   * Encoded size of the outcome so far but for the metadata JSON: header, body, and the
   * chunk lengths the metadata's `chunks` list gets.
   */
  private encoded = 8;
  /**
   * UTF-8 length of the metadata JSON (with an empty `chunks` list), measured only once the
   * outcome nears the limit: until then {@link metaBound} tells it cannot pass it.
   */
  private metaBytes: number | undefined;
  /** At least `metaBytes`, found without writing the JSON (see {@link jsonBound}). */
  private metaBound: number;
  /** True once the outcome passed the limit: nothing is held any more. */
  overflowed = false;

  /**
   * @param limit largest encoded outcome, in bytes
   * @param meta the outcome's metadata with an empty `chunks` list, to size it
   */
  constructor(
    private readonly limit: number,
    private meta: StoredOutcome['meta'],
  ) {
    // encodeOutcome: 4 bytes of magic, 4 of metadata length, the metadata JSON, the body.
    this.metaBound = jsonBound(meta, 0);
    this.overflowed = this.passed();
  }

  /** Whether the outcome as it is now is larger than `limit`. */
  private passed(): boolean {
    if (this.metaBytes === undefined) {
      if (this.encoded + this.metaBound <= this.limit) return false;
      this.metaBytes = utf8Length(JSON.stringify(this.meta));
    }
    return this.encoded + this.metaBytes > this.limit;
  }

  /** Copies `chunk` (the caller may reuse its buffer) unless the limit was passed. */
  append(chunk: Uint8Array): void {
    this.size += chunk.length;
    if (this.overflowed) return;
    // Each chunk adds its length and a comma to the `chunks` list of the metadata.
    this.encoded += chunk.length + String(chunk.length).length + (this.lengths.length > 0 ? 1 : 0);
    if (this.passed()) {
      this.overflowed = true;
      this.bytes = new Uint8Array(0);
      this.lengths = [];
      return;
    }
    const used = this.size - chunk.length;
    if (used + chunk.length > this.bytes.length)
      this.bytes = grow(this.bytes, used + chunk.length, this.limit);
    this.bytes.set(chunk, used);
    this.lengths.push(chunk.length);
  }

  /**
   * Adds the response's recorded trailer fields to the metadata (`trailers`, only when there
   * are some): they count toward the limit as the rest of the outcome does, and one that
   * passes it drops everything held, as a body chunk would.
   */
  trailers(pairs: [string, string][]): void {
    if (this.overflowed || pairs.length === 0) return;
    this.meta = { ...this.meta, trailers: pairs };
    this.metaBound = jsonBound(this.meta, 0);
    this.metaBytes = undefined;
    if (this.passed()) {
      this.overflowed = true;
      this.bytes = new Uint8Array(0);
      this.lengths = [];
    }
  }

  /**
   * The body held so far (a view, no copy), or undefined past the limit. Bytes below `size`
   * are never written again (growing copies into a new buffer, passing the limit drops it):
   * the view stays valid and unchanged, so a live log can share it instead of copying.
   */
  held(): Uint8Array | undefined {
    return this.overflowed ? undefined : this.bytes.subarray(0, this.size);
  }

  /** The outcome to store: the metadata with the chunk lengths, and the body bytes. */
  outcome(): StoredOutcome {
    return {
      meta: { ...this.meta, chunks: this.lengths.slice() },
      body: this.bytes.subarray(0, this.size),
    };
  }
}

/**
 * A larger copy of `bytes`: at least doubled (a body of one chunk takes exactly its size),
 * never past `max` (the body never outgrows the cap).
 */
function grow(bytes: Uint8Array, needed: number, max: number): Uint8Array {
  const capacity = Math.max(needed, Math.min(bytes.length * 2, max));
  const next = new Uint8Array(capacity);
  next.set(bytes);
  return next;
}

/**
 * At least the UTF-8 length of `JSON.stringify(value)` (a member `JSON.stringify` drops
 * counted all the same): a string's UTF-16 unit takes at most 6 bytes (`\u001f`, a lone
 * surrogate's `\udc00`), a number at most 25 characters (`-0.0000012345678901234567`).
 * Infinity past a depth of 32 (or for what JSON cannot hold): the JSON is then measured.
 */
function jsonBound(value: unknown, depth: number): number {
  if (typeof value === 'string') return 2 + 6 * value.length;
  if (typeof value === 'number') return 25;
  if (typeof value === 'boolean' || value === null || value === undefined) return 5;
  if (typeof value !== 'object' || depth > 32) return Number.POSITIVE_INFINITY;
  let bound = 2;
  if (Array.isArray(value)) {
    for (const item of value) bound += 1 + jsonBound(item, depth + 1);
    return bound;
  }
  if (Object.getPrototypeOf(value) !== Object.prototype && Object.getPrototypeOf(value) !== null)
    return Number.POSITIVE_INFINITY;
  for (const key in value)
    bound += 2 + 2 + 6 * key.length + jsonBound((value as Record<string, unknown>)[key], depth + 1);
  return bound;
}

/** The length of `text` in UTF-8 (a lone surrogate as the 3 bytes of U+FFFD, as TextEncoder writes it). */
function utf8Length(text: string): number {
  let bytes = text.length;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit < 0x80) continue;
    if (unit < 0x800) bytes += 1;
    else if (
      unit >= 0xd800 &&
      unit <= 0xdbff &&
      i + 1 < text.length &&
      (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00
    ) {
      // A surrogate pair: two units, four bytes.
      bytes += 2;
      i++;
    } else bytes += 2;
  }
  return bytes;
}
