import { canonicalJson, digestParts, fingerprint, isIdemError, type JsonValue } from '@idem/core';
import type { IncomingRequest } from './handler.js';
import { jsonTextOf } from './json-text.js';
import { mediaType } from './media-type.js';
import type { FingerprintOptions } from './options.js';
import { type RequestBody, TextJsonBody } from './request-body.js';
import type { RequestTarget } from './request-target.js';
import { byCodeUnits, sortInPlace } from './small-sort.js';

/**
 * The request's fingerprint: method, path, query (unless turned off), body (canonical JSON
 * or raw bytes) and its media type, the chosen headers and extras.
 */
export function fingerprintOf<R>(
  request: IncomingRequest<R>,
  method: string,
  url: RequestTarget,
  body: RequestBody,
  options: FingerprintOptions<R> | undefined,
): string | Promise<string> {
  const extras: Record<string, JsonValue> = {};
  if (options?.query ?? true) extras.query = url.search;
  // The same bytes as another media type are another request (a merge patch is not a JSON
  // patch, a form is not text); parameters such as charset, and case, do not matter.
  if (body.kind !== 'none') extras['content-type'] = mediaType(request.header('content-type'));
  for (const name of options?.headers ?? [])
    extras[`header:${name.toLowerCase()}`] = request.header(name) ?? null;
  // Without an extras hook there is nothing to wait for: no promise to make.
  const hook = options?.extras;
  if (!hook) return digest(method, url, body, extras, options);
  // A parsed body used as it is (no bytes) is the request's own object, which the hook can
  // reach and change: the body as read is fingerprinted, a copy taken before the hook runs.
  const read: RequestBody =
    body.kind === 'json' && body.bytes === undefined
      ? { kind: 'json', value: JSON.parse(JSON.stringify(body.value)) as JsonValue }
      : body;
  return (async () => {
    for (const [name, value] of Object.entries(await hook(request.native)))
      extras[`extra:${name}`] = value;
    return digest(method, url, read, extras, options);
  })();
}

function digest<R>(
  method: string,
  url: RequestTarget,
  body: RequestBody,
  extras: Record<string, JsonValue>,
  options: FingerprintOptions<R> | undefined,
): string {
  // Each input built whole (no spreads: this runs for every request). `exclude` applies to
  // a JSON body only.
  const route = url.pathname;
  if (body.kind === 'none') return fingerprint({ method, route, extras });
  if (body.kind === 'bytes') return fingerprint({ method, route, extras, body: body.bytes });
  const exclude = options?.exclude;
  if (!exclude?.length && body instanceof TextJsonBody) {
    const canonical = body.canonical();
    if (canonical !== undefined) return fingerprintWithCanonical(method, route, canonical, extras);
  }
  try {
    return fingerprint(
      exclude?.length
        ? { method, route, extras, body: body.value, exclude }
        : { method, route, extras, body: body.value },
    );
  } catch (error) {
    // A JSON value canonical JSON refuses (too deep, a huge number): its bytes are the body.
    if (!(isIdemError(error, 'NOT_CANONICAL') || error instanceof RangeError)) throw error;
    const bytes = body.bytes ?? new TextEncoder().encode(jsonTextOf(body.value, Infinity) ?? '');
    return fingerprint({ method, route, extras, body: bytes });
  }
}

/**
 * `fingerprint({ method, route, extras, body })` of `@idem/core` for a JSON body whose
 * canonical JSON is known (see {@link TextJsonBody}): the same parts, in the same order,
 * digested the same way; `test/derivation-vectors.test.ts` and
 * `test/canonical-text.test.ts` hold the two to the same digests.
 */
function fingerprintWithCanonical(
  method: string,
  route: string,
  canonical: string,
  extras: Record<string, JsonValue>,
): string {
  const parts: [string, string][] = [
    ['method', method.toUpperCase()],
    ['route', route],
    ['body:json', canonical],
  ];
  for (const name of sortInPlace(Object.keys(extras), byCodeUnits)) {
    const extra = extras[name];
    if (extra === undefined) continue;
    parts.push([`extra:${name}`, canonicalJson(extra)]);
  }
  return digestParts('idem/fingerprint/v1', parts);
}
