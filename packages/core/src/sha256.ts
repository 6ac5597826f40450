import { importNodeBuiltin, type NodeCrypto, nodeBuiltin } from './platform.js';

// SHA-256 (FIPS 180-4) in plain JavaScript, for runtimes without a synchronous native digest
// (workerd without `nodejs_compat`, Node < 20.16). Web Crypto's `digest` is asynchronous only,
// and key and fingerprint derivation are synchronous API.
const K = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);
const W = new Uint32Array(64);

function compress(h: Uint32Array, block: Uint8Array, at: number): void {
  for (let i = 0; i < 16; i++, at += 4) {
    W[i] =
      ((block[at] as number) << 24) |
      ((block[at + 1] as number) << 16) |
      ((block[at + 2] as number) << 8) |
      (block[at + 3] as number);
  }
  for (let i = 16; i < 64; i++) {
    const a = W[i - 15] as number;
    const b = W[i - 2] as number;
    const s0 = ((a >>> 7) | (a << 25)) ^ ((a >>> 18) | (a << 14)) ^ (a >>> 3);
    const s1 = ((b >>> 17) | (b << 15)) ^ ((b >>> 19) | (b << 13)) ^ (b >>> 10);
    W[i] = ((W[i - 16] as number) + s0 + (W[i - 7] as number) + s1) | 0;
  }
  let a = h[0] as number;
  let b = h[1] as number;
  let c = h[2] as number;
  let d = h[3] as number;
  let e = h[4] as number;
  let f = h[5] as number;
  let g = h[6] as number;
  let k = h[7] as number;
  for (let i = 0; i < 64; i++) {
    const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
    const t1 = (k + S1 + ((e & f) ^ (~e & g)) + (K[i] as number) + (W[i] as number)) | 0;
    const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
    const t2 = (S0 + ((a & b) ^ (a & c) ^ (b & c))) | 0;
    k = g;
    g = f;
    f = e;
    e = (d + t1) | 0;
    d = c;
    c = b;
    b = a;
    a = (t1 + t2) | 0;
  }
  h[0] = ((h[0] as number) + a) | 0;
  h[1] = ((h[1] as number) + b) | 0;
  h[2] = ((h[2] as number) + c) | 0;
  h[3] = ((h[3] as number) + d) | 0;
  h[4] = ((h[4] as number) + e) | 0;
  h[5] = ((h[5] as number) + f) | 0;
  h[6] = ((h[6] as number) + g) | 0;
  h[7] = ((h[7] as number) + k) | 0;
}

/** SHA-256 of `data` in plain JavaScript, lowercase hex; runs on any runtime. */
export function portableSha256Hex(data: Uint8Array): string {
  const h = new Uint32Array([
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
  ]);
  const whole = data.length - (data.length % 64);
  for (let at = 0; at < whole; at += 64) compress(h, data, at);
  // The tail, the 0x80 marker and the bit length (big-endian, 64 bits) fill one or two blocks.
  const tail = new Uint8Array(data.length % 64 < 56 ? 64 : 128);
  tail.set(data.subarray(whole));
  tail[data.length - whole] = 0x80;
  const bits = data.length * 8;
  const end = tail.length;
  const high = Math.floor(bits / 2 ** 32);
  tail[end - 8] = high >>> 24;
  tail[end - 7] = high >>> 16;
  tail[end - 6] = high >>> 8;
  tail[end - 5] = high;
  tail[end - 4] = bits >>> 24;
  tail[end - 3] = bits >>> 16;
  tail[end - 2] = bits >>> 8;
  tail[end - 1] = bits;
  for (let at = 0; at < end; at += 64) compress(h, tail, at);
  // One flat string of its own (not a tree of concatenations): a store may keep a storage key
  // as it is (see the engine-only forms of `answersSynchronously`).
  const codes = new Array<number>(64);
  for (let i = 0; i < 64; i++) {
    const nibble = ((h[i >>> 3] as number) >>> (28 - 4 * (i & 7))) & 0xf;
    codes[i] = nibble < 10 ? 0x30 + nibble : 0x57 + nibble;
  }
  return String.fromCharCode(...codes);
}

/** The native SHA-256 of `crypto` (`node:crypto`). */
function nativeSha256Hex(crypto: NodeCrypto): (data: Uint8Array) => string {
  // One-shot hashing (Node >= 20.12) skips the Hash object: a third of the cost of a small digest.
  const oneShot = crypto.hash;
  return oneShot
    ? (data) => oneShot('sha256', data, 'hex')
    : (data) => crypto.createHash('sha256').update(data).digest('hex');
}

const syncCrypto = nodeBuiltin<NodeCrypto>('node:crypto');
let active: (data: Uint8Array) => string = syncCrypto
  ? nativeSha256Hex(syncCrypto)
  : portableSha256Hex;

/**
 * Settles once core's SHA-256 is the one it keeps: at once where the runtime hands out
 * `node:crypto` synchronously or has none; on Node 20.0–20.15 (no `process.getBuiltinModule`)
 * once the dynamic import of `node:crypto` started at load settled. Until then those take the
 * portable SHA-256: the same digests, more CPU.
 */
export const sha256Settled: Promise<void> =
  (syncCrypto ? undefined : importNodeBuiltin<NodeCrypto>('node:crypto'))?.then((crypto) => {
    if (crypto && typeof crypto.createHash === 'function') active = nativeSha256Hex(crypto);
  }) ?? Promise.resolve();

/** Which SHA-256 core takes now: `node:crypto`'s, or its portable one. */
export function sha256Implementation(): 'node:crypto' | 'portable' {
  return active === portableSha256Hex ? 'portable' : 'node:crypto';
}

/** SHA-256 of `data`, lowercase hex: native where the runtime has it, else {@link portableSha256Hex}. */
export function sha256Hex(data: Uint8Array): string {
  return active(data);
}
