import { canonicalJson, digestParts, fingerprint, isIdemError, type JsonValue } from '@idem/core';
import { contentTypeParameters } from './content-type.js';
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
  given: RequestBody,
  options: FingerprintOptions<R> | undefined,
): string | Promise<string> {
  let body = given;
  const extras: Record<string, JsonValue> = {};
  if (options?.query ?? true) extras.query = url.search;
  // The same bytes as another media type are another request (a merge patch is not a JSON
  // patch, a form is not text), and so are they under another charset (see below).
  if (body.kind !== 'none') {
    const type = fingerprintedType(request.header('content-type'), options?.defaultCharset);
    extras['content-type'] = type;
    // Only a type that names a charset other than UTF-8 (or parameters that do not parse)
    // has a `;` here: the usual JSON request pays one indexOf.
    if (body.kind === 'json' && body.bytes !== undefined && type.indexOf(';') !== -1)
      body = jsonUnder(type, body.bytes, body);
  }
  for (const name of options?.headers ?? [])
    extras[`header:${name.toLowerCase()}`] = request.header(name) ?? null;
  const override = methodOverrides(
    request,
    method,
    options?.query === false ? url.search : undefined,
  );
  if (override) extras['method-override'] = override;
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

/**
 * The well-known method-override headers (`methodOverride` of Hono, Express's
 * `method-override`, Rails, ASP.NET): a framework that honours one after the middleware runs
 * another method than the request line's, so another overridden method under the key is
 * another request (422), never the first one's replay.
 */
const OVERRIDE_HEADERS = ['x-http-method', 'x-http-method-override', 'x-method-override'];

/** The query parameter method-override middlewares read (Hono's `query` option, Express's `method-override('_method')`, Rails, Laravel). */
const OVERRIDE_PARAMETER = '_method';

/**
 * The override headers a request sends, by name, each value trimmed and uppercased (methods
 * are matched that way); undefined when it sends none other than empty or its own method.
 * Then nothing is added: the fingerprints of such requests are those of earlier versions, and
 * a retry across an upgrade is still replayed. With `search` (the query string, given only
 * when the query is left out of the fingerprint), its `_method` parameters too (all of them,
 * as `query:_method`): otherwise `?_method=DELETE` and `?_method=PATCH` would be one request.
 */
function methodOverrides<R>(
  request: IncomingRequest<R>,
  method: string,
  search: string | undefined,
): Record<string, string> | undefined {
  let found: Record<string, string> | undefined;
  const add = (name: string, raw: string | undefined) => {
    const value = raw?.trim().toUpperCase();
    if (!value || value === method) return;
    found ??= {};
    found[name] = value;
  };
  for (const name of OVERRIDE_HEADERS) add(name, request.header(name));
  if (search && search.length > 1) {
    const values = new URLSearchParams(search).getAll(OVERRIDE_PARAMETER);
    if (values.length > 0) add(`query:${OVERRIDE_PARAMETER}`, values.join(', '));
  }
  return found;
}

/**
 * What of a Content-Type is fingerprinted: the media type (lowercase), and the charset when it
 * names one other than UTF-8 (`text/plain;charset=iso-8859-1`). A parser after the middleware
 * decodes the same bytes by the charset (`express.text()`, `express.urlencoded()`), so they are
 * another request under another charset. A parameter list that never names `charset`, UTF-8
 * (however spelled, named twice), an empty charset (parsers take their default, UTF-8) and no
 * charset add nothing, so the fingerprints of such requests are those of earlier versions and
 * a retry across an upgrade is still replayed. Other parameters (a multipart boundary is in the
 * body) and case do not matter. A parameter list that names `charset` but does not parse
 * (parsers read it differently) adds itself as sent, untrimmed and quoted, under a name of its
 * own (`;unparsed=`), never taken for a list that parsed: String#trim took U+00A0 off
 * `;\u00a0charset=latin1` (no charset to body-parser, a parameter named `\u00a0charset`),
 * which then was `;charset=latin1` (fprev23). A charset named twice, not both UTF-8, adds
 * both, joined with `,`; a list with a name holding a comma is written as JSON under another
 * name (`;charset*=`), as `charset="iso-8859-1,5"` (ISO-8859-15 to iconv-lite, which keeps
 * letters and digits) and `charset=iso-8859-1; charset=5` (ISO-8859-1 to a parser taking the
 * first) were one list (fprev23). With `defaultCharset` (`fingerprint.defaultCharset`: the
 * parsers' default is another charset), a type naming no charset, or an empty one, is taken
 * as naming that default: decoded by it, it is another request than `charset=utf-8`. JSON
 * types too: a JSON parser decodes UTF-8 whatever, but a text parser told to parse every type
 * decodes `application/json` naming none by its default (edgerev22), and nothing before the
 * parsers tells which one reads it; a JSON request naming none under the option is the
 * default named.
 */
function fingerprintedType(contentType: string | undefined, defaultCharset?: string): string {
  const type = mediaType(contentType);
  if (contentType === undefined) return type;
  // Only an app that says its parsers' default is not UTF-8 pays for this.
  const fallback = defaultCharset === undefined ? undefined : implicitCharset(defaultCharset);
  const semicolon = contentType.indexOf(';');
  // `fallback` is a token (checked with the options): no comma in it.
  if (semicolon === -1 || !/charset/i.test(contentType))
    return fallback === undefined ? type : `${type};charset=${fallback}`;
  // `charset = utf-8` as body-parser reads it.
  const params = contentTypeParameters(contentType, { spacesAroundEquals: true });
  if (!params) return `${type};unparsed=${JSON.stringify(contentType.slice(semicolon + 1))}`;
  const charsets = params.get('charset');
  if (!charsets) return fallback === undefined ? type : `${type};charset=${fallback}`;
  // Parsers take one of a repeated charset (which one differs): UTF-8 named twice is UTF-8, a
  // list with another charset in it is fingerprinted whole.
  let comma = false;
  const named = charsets.map((charset) => {
    const name = charset.trim().toLowerCase();
    if (name === '') return fallback ?? 'utf-8';
    if (name.includes(',')) comma = true;
    return name === 'utf8' ? 'utf-8' : name;
  });
  if (named.every((name) => name === 'utf-8')) return type;
  return comma ? `${type};charset*=${JSON.stringify(named)}` : `${type};charset=${named.join(',')}`;
}

/** Charsets that decode every ASCII byte as UTF-8 does (lower case, as fingerprinted). */
const ASCII_COMPATIBLE =
  /^(?:utf-8|us-ascii|ascii|iso-?8859-\d{1,2}|iso_8859-\d{1,2}|latin-?1|l1|cp819|ibm819|windows-125\d|cp125\d)$/;

/**
 * A JSON body (read from `bytes`, as UTF-8) under a fingerprinted type `type` that names a
 * charset other than UTF-8, or parameters that do not parse: `body` (its canonical JSON, so
 * that spacing, member order and `exclude` do not matter) when the bytes are all ASCII and
 * every charset named decodes ASCII as UTF-8 does; otherwise its bytes. A parser after the
 * middleware that decodes such a body by its charset (a text parser told to parse JSON types,
 * the edgerev22 setup) reads bytes that are one JSON value as UTF-8 as two: `{"a":"café"}`
 * with é as C3 A9 is `{"a":"cafÃ©"}` in Latin-1, with é as the escape `\u00e9` it is
 * `{"a":"café"}`, and canonical JSON read as UTF-8 made them one request (edgerev23).
 */
function jsonUnder(type: string, bytes: Uint8Array, body: RequestBody): RequestBody {
  const semicolon = type.indexOf(';');
  // A list of names without commas (`;charset*=` and `;unparsed=` are bytes).
  if (type.startsWith(';charset=', semicolon)) {
    let ascii = true;
    for (const name of type.slice(semicolon + 9).split(','))
      if (!ASCII_COMPATIBLE.test(name)) ascii = false;
    for (let i = 0; ascii && i < bytes.length; i++) if ((bytes[i] as number) > 0x7f) ascii = false;
    if (ascii) return body;
  }
  return { kind: 'bytes', bytes };
}

/**
 * The charset a request naming none is decoded with, under a parsers' default of
 * `defaultCharset`, when that is not UTF-8 (undefined for UTF-8), whatever its type: JSON
 * types too (see {@link fingerprintedType}).
 */
function implicitCharset(defaultCharset: string): string | undefined {
  const name = defaultCharset.trim().toLowerCase();
  return name === 'utf-8' || name === 'utf8' ? undefined : name;
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
