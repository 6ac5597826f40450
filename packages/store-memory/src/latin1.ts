/**
 * Node's native Latin-1 codec (one character a byte), called on plain `Uint8Array`s: Node's
 * `Buffer.prototype.latin1Slice` and `latin1Write` accept any typed array, so no `Buffer`
 * view is made a call. Only where a probe shows they do (Node 20 and later; another runtime's
 * `Buffer` may not): elsewhere `undefined`, and callers take their other path.
 */
interface Latin1Methods {
  latin1Slice(this: Uint8Array, start: number, end: number): string;
  latin1Write(this: Uint8Array, text: string, offset: number, length: number): number;
}

const methods = (() => {
  const proto = (globalThis as { Buffer?: { prototype: Partial<Latin1Methods> } }).Buffer
    ?.prototype;
  const { latin1Slice, latin1Write } = proto ?? {};
  if (typeof latin1Slice !== 'function' || typeof latin1Write !== 'function') return undefined;
  try {
    const probe = new Uint8Array(3);
    if (latin1Write.call(probe, 'h\u00ff', 0, 2) !== 2) return undefined;
    if (latin1Slice.call(probe, 0, 2) !== 'h\u00ff') return undefined;
  } catch {
    return undefined;
  }
  return { latin1Slice, latin1Write };
})();

/**
 * The first `length` bytes of `bytes` (all of them by default) as a string of as many
 * characters, one a byte: a fresh string of its own.
 */
export const latin1String: ((bytes: Uint8Array, length?: number) => string) | undefined =
  methods && ((bytes, length = bytes.byteLength) => methods.latin1Slice.call(bytes, 0, length));

/**
 * Writes the low byte of each of `text`'s UTF-16 units into `into` (which must have room);
 * returns how many it wrote.
 */
export const writeLatin1: ((text: string, into: Uint8Array) => number) | undefined =
  methods && ((text, into) => methods.latin1Write.call(into, text, 0, text.length));

const byteLength = (globalThis as { Buffer?: { byteLength?: unknown } }).Buffer?.byteLength;
const NOT_ASCII = /[\u0080-\uffff]/;

/**
 * Whether every character of `text` is below 0x80 (then it is its own UTF-8 and Latin-1
 * encoding): one native pass where there is `Buffer.byteLength`.
 */
export const isAscii: (text: string) => boolean =
  typeof byteLength === 'function'
    ? (text) => (byteLength as (t: string, e: 'utf8') => number)(text, 'utf8') === text.length
    : (text) => !NOT_ASCII.test(text);
