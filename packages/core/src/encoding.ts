import { createHash } from 'node:crypto';

/** One part of a length-prefixed encoding: a name and its bytes (strings are UTF-8). */
export type EncodedPart = readonly [name: string, value: string | Uint8Array];

const encoder = new TextEncoder();

function toBytes(value: string | Uint8Array): Uint8Array {
  return typeof value === 'string' ? encoder.encode(value) : value;
}

function lengthPrefix(length: number): Uint8Array {
  const prefix = new Uint8Array(8);
  new DataView(prefix.buffer).setBigUint64(0, BigInt(length));
  return prefix;
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
  const hash = createHash('sha256');
  const domainBytes = toBytes(domain);
  hash.update(lengthPrefix(domainBytes.length));
  hash.update(domainBytes);
  hash.update(lengthPrefix(parts.length));
  for (const [name, value] of parts) {
    const nameBytes = toBytes(name);
    const valueBytes = toBytes(value);
    hash.update(lengthPrefix(nameBytes.length));
    hash.update(nameBytes);
    hash.update(lengthPrefix(valueBytes.length));
    hash.update(valueBytes);
  }
  return hash.digest('hex');
}
