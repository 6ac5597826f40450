/**
 * A replay's content coding against the retry's `Accept-Encoding` (RFC 9110 12.5.3). A
 * compressing middleware mounted after idem compresses the response before it is recorded:
 * the replay carries those bytes and their `Content-Encoding` to every retry, whatever the
 * retry accepts. A retry that does not accept the recorded coding gets the body decoded
 * (identity, which every client reads), bounded; a body that does not decode (corrupt, a
 * coding this runtime cannot decode, larger decoded than the bound) is never sent to it as
 * bytes it said it cannot read: it gets a 406 problem instead.
 */

import type { PreparedResponse } from './prepared-response.js';
import { varyWith } from './recorded-headers.js';
import { concatBytes } from './request-body.js';

/** RFC 9110 5.6.2 token, lowercase (a coding's name is case-insensitive). */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/;
/** RFC 9110 12.4.2 qvalue. */
const QVALUE = /^(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)$/;

/** The one name of a coding that has two (RFC 9110 8.4.1: `x-gzip` is `gzip`). */
function codingName(name: string): string {
  if (name === 'x-gzip') return 'gzip';
  if (name === 'x-compress') return 'compress';
  return name;
}

/**
 * The codings of a `Content-Encoding` value, in the order they were applied (lowercase,
 * aliases folded, `identity` left out).
 */
function appliedCodings(value: string): string[] {
  const codings: string[] = [];
  for (const item of value.split(',')) {
    const name = item.trim().toLowerCase();
    if (name !== '' && name !== 'identity') codings.push(codingName(name));
  }
  return codings;
}

/**
 * The weights an `Accept-Encoding` value gives, by coding (`*` included): each coding's
 * lowest weight when it is named more than once. An element whose weight does not parse
 * weighs 0 (it never grants a coding); an element that is not a token is skipped.
 */
function weights(value: string): Map<string, number> {
  const weighed = new Map<string, number>();
  for (const element of value.split(',')) {
    const [first = '', ...params] = element.split(';');
    const name = first.trim().toLowerCase();
    if (name === '') continue;
    if (!TOKEN.test(name)) continue;
    let weight = 1;
    for (const param of params) {
      const equals = param.indexOf('=');
      const key = (equals === -1 ? param : param.slice(0, equals)).trim().toLowerCase();
      if (key !== 'q') continue;
      const q = equals === -1 ? '' : param.slice(equals + 1).trim();
      weight = QVALUE.test(q) ? Number(q) : 0;
    }
    const coding = codingName(name);
    weighed.set(coding, Math.min(weight, weighed.get(coding) ?? 1));
  }
  return weighed;
}

/**
 * Whether a request that sent `acceptEncoding` (undefined: no such field) takes every one of
 * `codings` (RFC 9110 12.5.3): no field takes any; an empty field takes none; a coding is
 * taken when it is listed with a weight above 0, or not listed while `*` is, above 0.
 */
export function acceptsCodings(acceptEncoding: string | undefined, codings: string[]): boolean {
  if (acceptEncoding === undefined) return true;
  const weighed = weights(acceptEncoding);
  return codings.every((coding) => (weighed.get(coding) ?? weighed.get('*') ?? 0) > 0);
}

/** Why a body was not decoded. */
export type UndecodedReason = 'corrupt' | 'too-large' | 'unsupported' | 'stacked';

/**
 * Most codings undone for one replay (curl's limit, after its CVE-2022-32206): each one is a
 * pass over up to the bound, so a recorded `gzip, gzip, …` of thousands would cost seconds of
 * CPU per retry for a body of a few KiB. Real responses have one, at most two.
 * @internal
 */
export const MAX_DECODED_CODINGS = 5;

class Undecoded extends Error {
  constructor(readonly reason: UndecodedReason) {
    super(reason);
  }
}

interface NodeZlib {
  brotliDecompress(
    bytes: Uint8Array,
    options: { maxOutputLength: number },
    callback: (error: (Error & { code?: string }) | null, result: Uint8Array) => void,
  ): void;
}

/**
 * `node:zlib` where the runtime hands it out synchronously (Node >= 20.16, Bun, Deno,
 * workerd with `nodejs_compat`), without a static `node:` import: this module loads on the
 * Web platform alone too. Read on each use (a test may take it away).
 * @internal
 */
export const platform = {
  zlib(): NodeZlib | undefined {
    try {
      const process = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } })
        .process;
      return process?.getBuiltinModule?.('node:zlib') as NodeZlib | undefined;
    } catch {
      return undefined;
    }
  },
};

/** gzip or deflate through the Web `DecompressionStream`, read until `bound` bytes. */
async function viaDecompressionStream(
  format: 'gzip' | 'deflate',
  bytes: Uint8Array,
  bound: number,
): Promise<Uint8Array> {
  // Every runtime @idem/http supports has it; one that has not cannot decode here.
  if (typeof DecompressionStream !== 'function') throw new Undecoded('unsupported');
  const stream = new DecompressionStream(format);
  const writer = stream.writable.getWriter();
  // Failures show on the reading side; these two only follow them.
  writer.write(bytes as Uint8Array<ArrayBuffer>).catch(() => {});
  writer.close().catch(() => {});
  const reader = stream.readable.getReader();
  const parts: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    let step: ReadableStreamReadResult<Uint8Array>;
    try {
      step = await reader.read();
    } catch {
      throw new Undecoded('corrupt');
    }
    if (step.done) break;
    total += step.value.length;
    // Read chunk by chunk (the stream holds back until read): a bomb stops at the bound.
    if (total > bound) {
      await reader.cancel().catch(() => {});
      throw new Undecoded('too-large');
    }
    parts.push(step.value);
  }
  return joined(parts, total);
}

function viaBrotli(bytes: Uint8Array, bound: number): Promise<Uint8Array> {
  const zlib = platform.zlib();
  if (!zlib) return Promise.reject(new Undecoded('unsupported'));
  return new Promise((resolve, reject) => {
    // maxOutputLength: zlib stops past it (a bomb never grows beyond the bound).
    zlib.brotliDecompress(bytes, { maxOutputLength: Math.max(1, bound) }, (error, result) => {
      if (error)
        reject(new Undecoded(error.code === 'ERR_BUFFER_TOO_LARGE' ? 'too-large' : 'corrupt'));
      else if (result.length > bound) reject(new Undecoded('too-large'));
      else resolve(result);
    });
  });
}

function joined(parts: readonly Uint8Array[], total: number): Uint8Array {
  return parts.length === 1 ? (parts[0] as Uint8Array) : concatBytes(parts, total);
}

/**
 * The body with `codings` (in the order applied) undone, at most `bound` bytes at every step.
 * @throws Undecoded
 */
async function decode(codings: string[], body: Uint8Array, bound: number): Promise<Uint8Array> {
  let bytes = body;
  for (let i = codings.length - 1; i >= 0; i--) {
    const coding = codings[i];
    if (coding === 'gzip' || coding === 'deflate')
      bytes = await viaDecompressionStream(coding, bytes, bound);
    else if (coding === 'br') bytes = await viaBrotli(bytes, bound);
    else throw new Undecoded('unsupported');
  }
  return bytes;
}

/** Default of `maxOutcomeBytes` (8 MiB): the bound when that is unbounded. */
const UNBOUNDED_DEFAULT = 8 * 1024 * 1024;
/** zlib's `maxOutputLength` takes at most `buffer.kMaxLength`; 1 GiB is below it everywhere. */
const MOST = 1024 * 1024 * 1024;

/**
 * How many bytes a decoded body may have: `maxOutcomeBytes` (what the recorder keeps of a
 * body), 8 MiB when that is unbounded, never more than 1 GiB: a bomb (a few KiB that decode
 * to gigabytes) stops there.
 */
function decodedBound(maxOutcomeBytes: number): number {
  return Number.isFinite(maxOutcomeBytes) ? Math.min(maxOutcomeBytes, MOST) : UNBOUNDED_DEFAULT;
}

/**
 * The replay as the retry can read it: as recorded when it has no body, no content coding,
 * or one the retry accepts; else decoded (no `Content-Encoding`, a strong `ETag` made weak:
 * the decoded bytes are another representation of the same content, `Vary: Accept-Encoding`),
 * or the reason it could not be (then the caller answers 406, never the encoded bytes).
 * An empty body (none, or a status that has none) has nothing to decode: it goes without its
 * `Content-Encoding`.
 * @internal
 */
export function replayForAccepted(
  prepared: PreparedResponse,
  acceptEncoding: string | undefined,
  bound: number,
): PreparedResponse | Promise<PreparedResponse | UndecodedReason> {
  // The common replay (nothing recorded with a coding, or one the retry takes) answers at
  // once, with no promise made: only a decode waits.
  const codings = refusedCodings(prepared.headers, acceptEncoding);
  return codings === undefined ? prepared : undoCodings(prepared, codings, bound);
}

/**
 * Whether a request that sent `acceptEncoding` refuses the coding of a response with
 * `headers` (lower-case names), as a replay of it would be decoded for that request.
 * @internal
 */
export function refusesCoding(
  headers: readonly (readonly [string, string])[],
  acceptEncoding: string | undefined,
): boolean {
  return refusedCodings(headers, acceptEncoding) !== undefined;
}

/** The codings of the recorded `Content-Encoding` when the retry refuses them, else undefined. */
function refusedCodings(
  headers: readonly (readonly [string, string])[],
  acceptEncoding: string | undefined,
): string[] | undefined {
  const recorded = headers.find(([name]) => name === 'content-encoding')?.[1];
  if (recorded === undefined) return undefined;
  const codings = appliedCodings(recorded);
  if (codings.length === 0 || acceptsCodings(acceptEncoding, codings)) return undefined;
  return codings;
}

async function undoCodings(
  prepared: PreparedResponse,
  codings: string[],
  bound: number,
): Promise<PreparedResponse | UndecodedReason> {
  const size = prepared.chunks.reduce((n, chunk) => n + chunk.length, 0);
  let body: Uint8Array | undefined;
  if (size > 0) {
    if (codings.length > MAX_DECODED_CODINGS) return 'stacked';
    try {
      body = await decode(codings, joined(prepared.chunks, size), decodedBound(bound));
    } catch (error) {
      if (error instanceof Undecoded) return error.reason;
      throw error;
    }
  }
  const headers: [string, string][] = [];
  let vary: string | undefined;
  for (const [name, value] of prepared.headers) {
    if (name === 'content-encoding') continue;
    if (name === 'vary') vary = value;
    else if (name === 'etag' && !value.startsWith('W/')) headers.push([name, `W/${value}`]);
    else headers.push([name, value]);
  }
  headers.push(['vary', varyWith(vary, 'accept-encoding')]);
  headers.sort((a, b) => (a[0] < b[0] ? -1 : 1));
  return {
    status: prepared.status,
    reason: prepared.reason,
    headers,
    chunks: body && body.length > 0 ? [body] : [],
    trailers: prepared.trailers,
  };
}
