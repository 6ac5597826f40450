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
  private lengths = new Uint32Array(0);
  private count = 0;
  /** Body bytes seen, held or not. */
  size = 0;
  /** Encoded size of the outcome so far: header, metadata JSON and body. */
  private encoded: number;
  /** True once the outcome passed the limit: nothing is held any more. */
  overflowed = false;

  /**
   * @param limit largest encoded outcome, in bytes
   * @param meta the outcome's metadata with an empty `chunks` list, to size it
   */
  constructor(
    private readonly limit: number,
    private readonly meta: StoredOutcome['meta'],
  ) {
    // encodeOutcome: 4 bytes of magic, 4 of metadata length, the metadata JSON, the body.
    this.encoded = 8 + new TextEncoder().encode(JSON.stringify(meta)).length;
    this.overflowed = this.encoded > limit;
  }

  /** Copies `chunk` (the caller may reuse its buffer) unless the limit was passed. */
  append(chunk: Uint8Array): void {
    this.size += chunk.length;
    if (this.overflowed) return;
    // Each chunk adds its length and a comma to the `chunks` list of the metadata.
    this.encoded += chunk.length + String(chunk.length).length + (this.count > 0 ? 1 : 0);
    if (this.encoded > this.limit) {
      this.overflowed = true;
      this.bytes = new Uint8Array(0);
      this.lengths = new Uint32Array(0);
      this.count = 0;
      return;
    }
    const used = this.size - chunk.length;
    if (used + chunk.length > this.bytes.length)
      this.bytes = grow(this.bytes, used + chunk.length, this.limit);
    this.bytes.set(chunk, used);
    if (this.count === this.lengths.length) {
      const lengths = new Uint32Array(Math.max(64, this.lengths.length * 2));
      lengths.set(this.lengths);
      this.lengths = lengths;
    }
    this.lengths[this.count++] = chunk.length;
  }

  /** The outcome to store: the metadata with the chunk lengths, and the body bytes. */
  outcome(): StoredOutcome {
    return {
      meta: { ...this.meta, chunks: Array.from(this.lengths.subarray(0, this.count)) },
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
