import { constants } from 'node:buffer';

/**
 * An outcome as the store holds it: a Latin-1 string, one character a byte, for every outcome
 * a string can hold (up to `buffer.constants.MAX_STRING_LENGTH` bytes, 512 MiB on 64-bit
 * V8), else the bytes. A string is one object on V8's heap; a `Uint8Array` is a typed array,
 * an ArrayBuffer and an off-heap block that V8 accounts as external memory, each held one
 * adding to the work of every garbage collection. A store that holds many outcomes for
 * hours holds them as strings: measured (100,000 acquire + complete of a 565-byte outcome,
 * 4 alternating runs), 22 against 29 µs of CPU a pair, median.
 */
export type HeldOutcome = string | Uint8Array;

const view = (bytes: Uint8Array): Buffer =>
  Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);

/** A held copy of `bytes` (never a view of the caller's memory). */
export function hold(bytes: Uint8Array): HeldOutcome {
  if (bytes.byteLength <= constants.MAX_STRING_LENGTH) return view(bytes).toString('latin1');
  const copy = new Uint8Array(bytes.byteLength);
  copy.set(bytes);
  return copy;
}

/** A fresh `Uint8Array` with the held bytes, with a buffer of its own. */
export function release(held: HeldOutcome): Uint8Array {
  const out = new Uint8Array(held.length);
  if (typeof held === 'string') view(out).write(held, 'latin1');
  else out.set(held);
  return out;
}

/** Whether the held outcome is exactly `bytes`. */
export function holds(held: HeldOutcome | undefined, bytes: Uint8Array): boolean {
  if (held === undefined || held.length !== bytes.byteLength) return false;
  if (typeof held === 'string') {
    for (let i = 0; i < bytes.byteLength; i++) if (held.charCodeAt(i) !== bytes[i]) return false;
    return true;
  }
  return view(held).equals(bytes);
}
