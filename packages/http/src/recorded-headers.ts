import { InvalidInputError } from '@idem/core';

/** Response headers recorded and replayed by default. */
export const DEFAULT_RECORDED_HEADERS: readonly string[] = [
  'cache-control',
  'content-disposition',
  'content-encoding',
  'content-language',
  'content-location',
  'content-type',
  'etag',
  'expires',
  'last-modified',
  'link',
  'location',
  'retry-after',
  'vary',
  'x-content-type-options',
];

// RFC 9110 7.6.1 connection-specific fields, plus fields that describe one transfer.
const NEVER_RECORDED = new Set([
  'set-cookie',
  'set-cookie2',
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'content-length',
  'date',
  'idempotent-replayed',
]);

/**
 * Lowercases and checks an allowlist. Set-Cookie, hop-by-hop fields and per-transfer fields
 * (Content-Length, Date) MUST never be replayed, so naming one is a configuration error.
 */
export function resolveRecordedHeaders(names: readonly string[] | undefined): ReadonlySet<string> {
  const list = (names ?? DEFAULT_RECORDED_HEADERS).map((name) => name.toLowerCase());
  for (const name of list) {
    if (NEVER_RECORDED.has(name)) {
      throw new InvalidInputError(`The ${name} header is never recorded or replayed`);
    }
  }
  return new Set(list);
}

/** The allowlisted headers of a response, in a stable order, as [name, value] pairs. */
export function pickRecordedHeaders(
  headers: Headers,
  allowed: ReadonlySet<string>,
): [string, string][] {
  const picked: [string, string][] = [];
  for (const [name, value] of headers) {
    if (allowed.has(name)) picked.push([name, value]);
  }
  return picked;
}
