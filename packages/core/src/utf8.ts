import { nodeBuffer } from './platform.js';

/**
 * UTF-8 length of `text` counted without encoding it: what `TextEncoder` would write (a lone
 * surrogate becomes U+FFFD, 3 bytes), for runtimes without `Buffer.byteLength`.
 */
export function countUtf8(text: string): number {
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit < 0x80) bytes += 1;
    else if (unit < 0x800) bytes += 2;
    else if (unit >= 0xd800 && unit < 0xdc00 && i + 1 < text.length) {
      const low = text.charCodeAt(i + 1);
      if (low >= 0xdc00 && low < 0xe000) {
        bytes += 4;
        i++;
      } else bytes += 3;
    } else bytes += 3;
  }
  return bytes;
}

const NodeBuffer = nodeBuffer();

/** UTF-8 length of `text`: Node's `Buffer.byteLength` where there is one (native), else counted. */
export const utf8Length: (text: string) => number = NodeBuffer
  ? (text) => NodeBuffer.byteLength(text, 'utf8')
  : countUtf8;

/** The bytes of a string of one character a byte (a store's Latin-1 form), a copy. */
export function latin1Bytes(held: string): Uint8Array {
  if (NodeBuffer) return NodeBuffer.from(held, 'latin1');
  const bytes = new Uint8Array(held.length);
  for (let i = 0; i < held.length; i++) bytes[i] = held.charCodeAt(i);
  return bytes;
}
