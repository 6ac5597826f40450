import {
  deriveKey,
  generateKey,
  InvalidKeyError,
  isIdemError,
  quotedInput,
  validateKey,
} from '@idem/core';
import { IdemClientError } from './errors.js';

import type { KeyStrategy } from './fetch-options.js';
import { formatKeyHeader, parseKeyHeader } from './key-header.js';
import { bodyBytes, type PreparedRequest } from './request-body.js';

/**
 * What a bare key cannot carry: a leading or trailing space or tab (a field value loses them on
 * the wire), or a leading double quote (the server reads the value as a quoted key: `"k"` is
 * the key `k`).
 */
const BARE_UNCARRIABLE = /^[ \t"]|[ \t]$/;

const utf8 = new TextDecoder('utf-8', { fatal: true });

async function contentKey(request: PreparedRequest): Promise<string> {
  const bytes = await bodyBytes(request);
  try {
    let body: string | { base64: string };
    try {
      body = utf8.decode(bytes);
    } catch (error) {
      if (!(error instanceof TypeError)) throw error; // not UTF-8: base64 below
      body = { base64: Buffer.from(bytes).toString('base64') };
    }
    return deriveKey({ method: request.method, url: normalizedUrl(request.url), body });
  } catch (error) {
    // A body whose text (or base64) would pass V8's longest string (about 512 MB of text,
    // 400 MB of bytes) cannot give a key this way: a typed error, the keys of every body that
    // could be encoded left as they were.
    if (isIdemError(error)) throw error;
    throw new IdemClientError(
      'KEY_NOT_DERIVABLE',
      `The body (${bytes.byteLength} bytes) is too large to derive a key from its content; pass an Idempotency-Key header or use key: "random".`,
      { cause: error },
    );
  }
}

/**
 * The URL as fetch sends it (`new URL(url, base).href` without its `#fragment`: scheme and
 * host lowercased, default port dropped, dot segments resolved), so two spellings of one URL
 * give one key. A relative
 * URL is resolved against the page's location where there is one, as fetch does; one that
 * does not parse (a relative URL for a custom fetch without a base) is kept as spelled.
 */
function normalizedUrl(url: string): string {
  const base = (globalThis as { location?: { href?: unknown } }).location?.href;
  try {
    const parsed = new URL(url, typeof base === 'string' ? base : undefined);
    // The fragment never leaves the client: fetch sends the URL without it.
    parsed.hash = '';
    return parsed.href;
  } catch {
    return url;
  }
}

/**
 * The key of one logical call: the caller's key header if present (left as sent), else a key
 * from `strategy`, written into the request's headers so every attempt carries it.
 */
export async function assignKey(
  request: PreparedRequest,
  settings: { strategy: KeyStrategy; headerName: string; keyFormat: 'sf-string' | 'bare' },
): Promise<string> {
  const { strategy, headerName, keyFormat } = settings;
  const existing = request.headers.get(headerName);
  if (existing !== null) return parseKeyHeader(existing);
  let key: string;
  if (strategy === 'random') key = generateKey();
  else if (strategy === 'content') key = await contentKey(request);
  else {
    key = await strategy({
      method: request.method,
      url: request.url,
      headers: request.headers,
      body: request.body,
    });
    validateKey(key);
  }
  if (keyFormat === 'bare' && BARE_UNCARRIABLE.test(key)) {
    // A field value loses its leading and trailing spaces on the wire (RFC 9110 5.5), and one
    // that starts with a quote is a Structured Field String to the server: this key would reach
    // it as another one ('k' for ' k' or '"k"') and be answered with that one's outcome.
    throw new InvalidKeyError(
      `keyFormat 'bare' cannot carry a key that starts or ends with a space or a tab, or starts with a double quote (the server would read another key): ${quotedInput(key)}; use the default 'sf-string' format or another key`,
    );
  }
  request.headers.set(headerName, formatKeyHeader(key, keyFormat));
  return key;
}
