import { latin1String } from './latin1.js';

/**
 * An outcome as the store holds it: a Latin-1 string, one character a byte, for every outcome
 * a string can hold (up to 512 MiB, V8's `MAX_STRING_LENGTH` on 64-bit), else the bytes. A
 * string is one object on V8's heap; a `Uint8Array` is a typed array, an ArrayBuffer and an
 * off-heap block that V8 accounts as external memory, each held one
 * adding to the work of every garbage collection. A store that holds many outcomes for
 * hours holds them as strings: measured (100,000 acquire + complete of a 565-byte outcome,
 * 4 alternating runs), 22 against 29 µs of CPU a pair, median.
 */
export type HeldOutcome = string | Uint8Array;

/** Node's `Buffer` (Node, Bun, Deno, workerd with `nodejs_compat`); the Latin-1 codec is native. */
type LatinBuffer = Uint8Array & {
  toString(encoding: 'latin1'): string;
  write(text: string, encoding: 'latin1'): number;
  latin1Write?(text: string, offset: number, length: number): number;
  equals(other: Uint8Array): boolean;
};
const NodeBuffer = (
  globalThis as {
    Buffer?: { from(buffer: ArrayBufferLike, offset: number, length: number): LatinBuffer };
  }
).Buffer;

/**
 * Longest string held: V8's limit on 64-bit (`buffer.constants.MAX_STRING_LENGTH`, 512 MiB),
 * the lowest of the engines (JavaScriptCore allows 2 GiB); a larger outcome is held as bytes.
 */
const MAX_STRING_BYTES = 2 ** 29 - 24;

const view = (bytes: Uint8Array, buffer: NonNullable<typeof NodeBuffer>): LatinBuffer =>
  buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);

/** A held copy of `bytes` (never a view of the caller's memory). */
export function hold(bytes: Uint8Array): HeldOutcome {
  // Without Buffer (workerd, a browser) there is no native Latin-1 codec: bytes are held.
  if (NodeBuffer && bytes.byteLength <= MAX_STRING_BYTES)
    return latin1String ? latin1String(bytes) : view(bytes, NodeBuffer).toString('latin1');
  const copy = new Uint8Array(bytes.byteLength);
  copy.set(bytes);
  return copy;
}

/** A fresh `Uint8Array` with the held bytes, with a buffer of its own. */
export function release(held: HeldOutcome): Uint8Array {
  const out = new Uint8Array(held.length);
  // A string is held only where there is a Buffer.
  if (typeof held === 'string')
    view(out, NodeBuffer as NonNullable<typeof NodeBuffer>).write(held, 'latin1');
  else out.set(held);
  return out;
}

/** Whether the held outcome is exactly `bytes` (or the bytes a string of one character a byte stands for). */
export function holds(held: HeldOutcome | undefined, bytes: Uint8Array | string): boolean {
  if (held === undefined || held.length !== bytes.length) return false;
  if (typeof bytes === 'string') {
    if (typeof held === 'string') return held === bytes;
    for (let i = 0; i < bytes.length; i++) if (held[i] !== bytes.charCodeAt(i)) return false;
    return true;
  }
  if (typeof held === 'string') {
    for (let i = 0; i < bytes.byteLength; i++) if (held.charCodeAt(i) !== bytes[i]) return false;
    return true;
  }
  for (let i = 0; i < bytes.byteLength; i++) if (held[i] !== bytes[i]) return false;
  return true;
}

/**
 * Where {@link viewOf} writes: one buffer a store reuses, grown up to {@link VIEW_MAX} bytes
 * (`plain`: the same memory as a plain `Uint8Array`, whose views are cheaper to make).
 */
export interface ViewBuffer {
  bytes: LatinBuffer | undefined;
  plain: Uint8Array | undefined;
}

/** Largest outcome {@link viewOf} writes into the reused buffer; a larger one is copied out. */
const VIEW_MAX = 65_536;

/**
 * The held bytes as a view of `into`'s buffer, valid until the next call that writes it
 * (where the outcome is a string that fits), else a fresh copy ({@link release}).
 */
export function viewOf(held: HeldOutcome, into: ViewBuffer): Uint8Array {
  if (typeof held !== 'string' || held.length > VIEW_MAX) return release(held);
  let buffer = into.bytes;
  let plain = into.plain;
  if (buffer === undefined || plain === undefined || plain.length < held.length) {
    plain = new Uint8Array(held.length <= 4_096 ? 4_096 : VIEW_MAX);
    buffer = view(plain, NodeBuffer as NonNullable<typeof NodeBuffer>);
    into.bytes = buffer;
    into.plain = plain;
  }
  // Node's own Latin-1 writer where it is exposed (Node, Bun), without `write`'s argument parsing.
  if (buffer.latin1Write) buffer.latin1Write(held, 0, held.length);
  else buffer.write(held, 'latin1');
  return plain.subarray(0, held.length);
}
