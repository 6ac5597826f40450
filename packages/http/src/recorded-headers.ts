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

/**
 * The CORS fields of an actual (not preflight) response: recorded apart from the allowlist,
 * with the request `Origin` they were computed for, and replayed only to a request from that
 * same `Origin` (a CORS middleware mounted after idem does not run for a replay).
 */
export const CORS_RESPONSE_HEADERS: ReadonlySet<string> = new Set([
  'access-control-allow-credentials',
  'access-control-allow-origin',
  'access-control-expose-headers',
]);

/** A `Vary` value (undefined: none) that names `name` (lowercase), as it was when it did. */
export function varyWith(vary: string | undefined, name: string): string {
  if (vary === undefined || vary.trim() === '') return name;
  const names = vary.split(',').map((item) => item.trim().toLowerCase());
  if (names.includes('*') || names.includes(name)) return vary;
  return `${vary}, ${name}`;
}

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

/**
 * The names a response's `Trailer` header declares (lowercase, each once), from its value
 * (null: none). Items that are no field name are skipped.
 */
export function declaredTrailers(value: string | null | undefined): Set<string> {
  const names = new Set<string>();
  if (!value) return names;
  for (const item of value.split(',')) {
    const name = item.trim().toLowerCase();
    if (isLowercaseFieldName(name)) names.add(name);
  }
  return names;
}

const FIELD_NAME = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/;

/** Whether `name` is a field name as a `Headers` iterates it: a token, lowercase. */
export function isLowercaseFieldName(name: string): boolean {
  return FIELD_NAME.test(name);
}

/**
 * Fields that RFC 9110 (6.5.1) says a trailer cannot carry (framing, routing, request
 * modifiers, authentication, response control data, how to process the content): never
 * recorded as trailers, declared or not (Fastify refuses them as trailers too).
 */
const NEVER_TRAILERS = new Set([
  'authorization',
  'cache-control',
  'content-encoding',
  'content-range',
  'content-type',
  'host',
  'max-forwards',
]);

/** Whether a trailer field of this (lowercase) name may be recorded and replayed. */
export function isRecordableTrailer(name: string): boolean {
  return !NEVER_RECORDED.has(name) && !NEVER_TRAILERS.has(name);
}

/** Whether a (lowercase) header name is one that is never recorded (a stored one is forged). */
export function isNeverRecorded(name: string): boolean {
  return NEVER_RECORDED.has(name);
}

/**
 * The trailer fields of a response that are recorded: the ones its `Trailer` header declared
 * (`declared`), never a field that is never recorded (`NEVER_RECORDED`) nor one a trailer cannot carry (see
 * `NEVER_TRAILERS`). Answers the recorded pairs as a `Headers` iterates them (lowercase names,
 * each once, values of a repeated name joined by `, `, sorted) and the names left out.
 */
export function pickRecordedTrailers(
  fields: readonly (readonly [string, string])[],
  declared: ReadonlySet<string>,
): { recorded: [string, string][]; left: string[] } {
  const kept = new Headers();
  // A Set: a response may add any number of trailers (linear, not a list searched each time).
  const left = new Set<string>();
  for (const [field, value] of fields) {
    const name = field.toLowerCase();
    let taken = false;
    if (declared.has(name) && isRecordableTrailer(name)) {
      try {
        kept.append(name, value);
        taken = true;
      } catch {
        // A name or value a `Headers` refuses (Node checked them: not seen in practice).
      }
    }
    if (!taken) left.add(name);
  }
  return { recorded: [...kept], left: [...left] };
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
