// Micro-benchmark of the hashing paths key and fingerprint derivation can take, to choose the
// one each runtime uses: `npx vitest bench --run bench/digest.bench.ts` in packages/core.
// Figures, not assertions: tests never time anything.
import { createHash, randomUUID } from 'node:crypto';
import { bench, describe } from 'vitest';
import { canonicalJson } from '../src/canonical-json.js';
import { createDigestParts, textWriters } from '../src/encoding.js';
import { portableSha256Hex, sha256Hex } from '../src/sha256.js';

// What a request derives: a storage key (scope + key) and a fingerprint (method, route, body).
const scope = canonicalJson(['idem/http/v1', { principal: 'acct_1234567890' }, 'POST /charges']);
const key = '5f0c8a3e-6b1d-4c52-9a77-1e2f3a4b5c6d';
const body = canonicalJson({
  amount: 1999,
  currency: 'eur',
  customer: 'cus_123',
  note: 'x'.repeat(200),
});
const parts = [
  ['scope', scope],
  ['key', key],
] as const;
const fpParts = [
  ['method', 'POST'],
  ['route', '/charges'],
  ['body', body],
] as const;

const native = createDigestParts(textWriters.buffer ?? textWriters.web, sha256Hex);
const webNative = createDigestParts(textWriters.web, sha256Hex);
const portable = createDigestParts(textWriters.web, portableSha256Hex);
const legacy = createDigestParts(textWriters.web, (data) =>
  createHash('sha256').update(data).digest('hex'),
);
const encoder = new TextEncoder();
const subtle = globalThis.crypto.subtle;

async function webCryptoDigest(): Promise<string> {
  // The encoding would be the same; Web Crypto only offers an async digest of it.
  const digest = new Uint8Array(await subtle.digest('SHA-256', encoder.encode(scope + key)));
  let hex = '';
  for (const byte of digest) hex += byte.toString(16).padStart(2, '0');
  return hex;
}

describe('digestParts: storage key + fingerprint of one request', () => {
  bench('Buffer + node:crypto hash (Node, Bun, Deno)', () => {
    native('idem/storage-key/v1', parts);
    native('idem/fingerprint/v1', fpParts);
  });
  bench('TextEncoder + node:crypto hash', () => {
    webNative('idem/storage-key/v1', parts);
    webNative('idem/fingerprint/v1', fpParts);
  });
  bench('TextEncoder + createHash (Node < 20.12)', () => {
    legacy('idem/storage-key/v1', parts);
    legacy('idem/fingerprint/v1', fpParts);
  });
  bench('TextEncoder + portable SHA-256 (no node:crypto)', () => {
    portable('idem/storage-key/v1', parts);
    portable('idem/fingerprint/v1', fpParts);
  });
  bench('Web Crypto subtle.digest, awaited (two digests)', async () => {
    await webCryptoDigest();
    await webCryptoDigest();
  });
});

describe('owner token', () => {
  bench('globalThis.crypto.randomUUID', () => {
    globalThis.crypto.randomUUID();
  });
  bench('node:crypto randomUUID', () => {
    randomUUID();
  });
});
