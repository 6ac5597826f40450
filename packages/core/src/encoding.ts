import { createHash } from 'node:crypto';

/** One part of a length-prefixed encoding: a name and its bytes (strings are UTF-8). */
export type EncodedPart = readonly [name: string, value: string | Uint8Array];

function byteLength(value: string | Uint8Array): number {
  return typeof value === 'string' ? Buffer.byteLength(value, 'utf8') : value.length;
}

/**
 * SHA-256 over an unambiguous encoding of named parts: every name and every value is
 * preceded by its byte length (8 bytes, big-endian), so no two different part lists encode
 * alike. ("a:b","c") and ("a","b:c") give different digests.
 *
 * @param domain a label that separates uses of the encoding (keys vs fingerprints)
 * @returns the digest, lowercase hex (64 characters)
 */
export function digestParts(domain: string, parts: readonly EncodedPart[]): string {
  let total = 8 + byteLength(domain) + 8;
  for (const [name, value] of parts) total += 16 + byteLength(name) + byteLength(value);
  // One buffer, one hash update: this runs on every request.
  const buf = Buffer.allocUnsafe(total);
  let at = 0;
  const put = (value: string | Uint8Array): void => {
    const length = byteLength(value);
    buf.writeUInt32BE(Math.floor(length / 2 ** 32), at);
    buf.writeUInt32BE(length >>> 0, at + 4);
    at += 8;
    if (typeof value === 'string') at += buf.write(value, at, 'utf8');
    else {
      buf.set(value, at);
      at += value.length;
    }
  };
  put(domain);
  buf.writeUInt32BE(0, at);
  buf.writeUInt32BE(parts.length, at + 4);
  at += 8;
  for (const [name, value] of parts) {
    put(name);
    put(value);
  }
  return createHash('sha256').update(buf).digest('hex');
}
