/**
 * The canonical form of a `multipart/form-data` body for the fingerprint: its parts in order,
 * each with its headers and content, without the boundary. Clients draw a new random boundary
 * every time they encode a form (`fetch` with a `FormData` body, browsers, curl), so the retry
 * of one upload must not be told apart by it; a changed field, file name or file content is
 * another request. The preamble and epilogue (text outside the parts, which every parser
 * ignores) are left out too. Transport padding after a boundary (RFC 2046) is kept: busboy
 * skips the part after a padded boundary where other parsers read it. The boundary is the
 * Content-Type's `boundary` parameter read per RFC 9110 5.6.6 (`contentTypeParameters`); a
 * Content-Type whose parameters do not parse, or that names two boundaries, is refused (400).
 */

import { contentTypeParameters } from './content-type.js';
import { brandError, isBranded } from './error-brand.js';
import { trimOws } from './media-type.js';

/** At most this many parts in a multipart body; more → 413. */
export const MAX_MULTIPART_PARTS = 1_000;
/** At most this many bytes of headers in one part; more → 413. */
export const MAX_MULTIPART_HEADER_BYTES = 16_384;

/** Thrown for a body its content type says is multipart but is not; answered with 400. */
export class MalformedBodyError extends Error {
  /** Also an instance of this class made by the other entry point's copy (see `brandError`). */
  static override [Symbol.hasInstance](value: unknown): boolean {
    // biome-ignore lint/complexity/noThisInStatic: the class `instanceof` is asked about (a subclass too)
    return isBranded(this, MalformedBodyError, 'MalformedBodyError', value);
  }

  constructor(reason: string) {
    super(reason);
    this.name = 'MalformedBodyError';
    brandError(this, 'MalformedBodyError');
  }
}

/** Thrown when a multipart body has too many parts or too many header bytes in a part; 413. */
export class BodyPartsLimitError extends Error {
  /** Also an instance of this class made by the other entry point's copy (see `brandError`). */
  static override [Symbol.hasInstance](value: unknown): boolean {
    // biome-ignore lint/complexity/noThisInStatic: the class `instanceof` is asked about (a subclass too)
    return isBranded(this, BodyPartsLimitError, 'BodyPartsLimitError', value);
  }

  constructor(reason: string) {
    super(reason);
    this.name = 'BodyPartsLimitError';
    brandError(this, 'BodyPartsLimitError');
  }
}

// OWS only, as `isJsonContentType` (U+00A0 is no whitespace to the parsers).
const MULTIPART_FORM = /^multipart\/form-data[ \t]*(?:;|$)/i;

/** True for a `multipart/form-data` content type (any parameters). */
export function isMultipartFormContentType(contentType: string | null | undefined): boolean {
  return typeof contentType === 'string' && MULTIPART_FORM.test(trimOws(contentType));
}

/**
 * The `boundary` parameter of a content type, read as RFC 9110 5.6.6 says (a `boundary=`
 * inside another parameter's quoted value is that value, not the boundary), else undefined.
 * @throws MalformedBodyError when the parameter list does not parse, or names `boundary`
 *   more than once (parsers differ on which one they split on: no guess)
 */
function boundaryOf(contentType: string): string | undefined {
  // A backslash: a quoted-pair in the boundary, which parsers undo differently (busboy keeps
  // it, undici and this parser drop it): the app could split on another boundary than this
  // fingerprint. RFC 2046 boundaries have no backslash either.
  if (contentType.includes('\\')) {
    throw new MalformedBodyError(
      'The Content-Type of the multipart/form-data body has a backslash (a quoted-pair parsers read differently)',
    );
  }
  const params = contentTypeParameters(contentType);
  if (!params) {
    throw new MalformedBodyError(
      'The Content-Type parameters of the multipart/form-data body do not parse (RFC 9110 5.6.6)',
    );
  }
  const boundaries = params.get('boundary');
  if (boundaries && boundaries.length > 1) {
    throw new MalformedBodyError(
      'The Content-Type of the multipart/form-data body names more than one boundary',
    );
  }
  return boundaries?.[0];
}

const CR = 13;
const LF = 10;
const DASH = 45;

/** Index of `needle` in `haystack` from `from`, else -1. */
function indexOf(haystack: Uint8Array, needle: Uint8Array, from: number): number {
  const first = needle[0] as number;
  const last = haystack.length - needle.length;
  for (let at = haystack.indexOf(first, from); at !== -1 && at <= last; ) {
    let i = 1;
    while (i < needle.length && haystack[at + i] === needle[i]) i++;
    if (i === needle.length) return at;
    at = haystack.indexOf(first, at + 1);
  }
  return -1;
}

// Latin-1 maps every byte to one character: header bytes (raw UTF-8 file names included)
// are kept exactly, so two different headers never read alike.
const latin1 = (bytes: Uint8Array): string => {
  let text = '';
  for (let i = 0; i < bytes.length; i += 4_096) {
    text += String.fromCharCode(...bytes.subarray(i, i + 4_096));
  }
  return text;
};

/** A part's headers: names lowercased, values trimmed, in name order (stable). */
function partHeaders(block: Uint8Array): [string, string][] {
  const headers: [string, string][] = [];
  for (const line of latin1(block).split('\r\n')) {
    if (line === '') continue;
    // An obsolete folded line continues the header before it.
    if ((line[0] === ' ' || line[0] === '\t') && headers.length > 0) {
      const previous = headers[headers.length - 1] as [string, string];
      previous[1] = `${previous[1]} ${line.trim()}`;
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0)
      throw new MalformedBodyError('A multipart part has a header line without a name');
    headers.push([line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim()]);
  }
  return headers.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
}

const encoder = new TextEncoder();

/**
 * The canonical bytes of a `multipart/form-data` body: a version tag, then for each part its
 * headers (JSON) and its content, each length-prefixed, so no two different part lists encode
 * alike.
 * @throws MalformedBodyError without a boundary, without the closing delimiter, or for a part
 *   whose headers do not parse
 * @throws BodyPartsLimitError past {@link MAX_MULTIPART_PARTS} parts or
 *   {@link MAX_MULTIPART_HEADER_BYTES} header bytes in a part
 */
export function canonicalMultipart(bytes: Uint8Array, contentType: string): Uint8Array {
  const boundary = boundaryOf(contentType);
  if (!boundary || boundary.length > 70) {
    throw new MalformedBodyError(
      'A multipart/form-data body needs a boundary of 1 to 70 characters',
    );
  }
  const dashBoundary = encoder.encode(`--${boundary}`);
  const delimiter = encoder.encode(`\r\n--${boundary}`);
  // The first boundary opens the body or follows the preamble's line break.
  let at = 0;
  const startsWithBoundary = dashBoundary.every((byte, i) => bytes[i] === byte);
  if (startsWithBoundary) at = dashBoundary.length;
  else {
    const found = indexOf(bytes, delimiter, 0);
    if (found === -1) throw new MalformedBodyError('The multipart body has no boundary line');
    at = found + delimiter.length;
  }
  const out: Uint8Array[] = [encoder.encode('idem-multipart/v1\n')];
  let parts = 0;
  for (;;) {
    // After a boundary: `--` closes the body; else optional padding, then a line break.
    if (bytes[at] === DASH && bytes[at + 1] === DASH) break;
    const padStart = at;
    while (bytes[at] === 0x20 || bytes[at] === 0x09) at++;
    // Transport padding (RFC 2046) is kept: parsers do not agree on it (busboy skips the
    // part after a padded boundary, others read it), so two bodies whose parts differ only
    // in where the padding is may be two different forms to the app. A part entry starts
    // with a digit; a padding entry with `p`, so no two part lists encode alike.
    const padding = bytes.subarray(padStart, at);
    if (bytes[at] !== CR || bytes[at + 1] !== LF) {
      throw new MalformedBodyError('A multipart boundary line does not end with CRLF');
    }
    const start = at + 2;
    const end = indexOf(bytes, delimiter, start);
    if (end === -1) throw new MalformedBodyError('The multipart body has no closing boundary');
    if (++parts > MAX_MULTIPART_PARTS) {
      throw new BodyPartsLimitError(
        `The multipart body has more than ${MAX_MULTIPART_PARTS} parts`,
      );
    }
    const part = bytes.subarray(start, end);
    // Headers end at the first empty line; a part that starts with one has none.
    const split =
      part[0] === CR && part[1] === LF ? 0 : indexOf(part, encoder.encode('\r\n\r\n'), 0);
    if (split === -1) throw new MalformedBodyError('A multipart part has no end of headers');
    if (split > MAX_MULTIPART_HEADER_BYTES) {
      throw new BodyPartsLimitError(
        `A multipart part has more than ${MAX_MULTIPART_HEADER_BYTES} bytes of headers`,
      );
    }
    const headers = encoder.encode(JSON.stringify(partHeaders(part.subarray(0, split))));
    const content = part.subarray(split === 0 ? 2 : split + 4);
    if (padding.length > 0) out.push(encoder.encode(`p${padding.length}:`), padding);
    out.push(
      encoder.encode(`${headers.length}:`),
      headers,
      encoder.encode(`\n${content.length}:`),
      content,
      encoder.encode('\n'),
    );
    at = end + delimiter.length;
  }
  let size = 0;
  for (const chunk of out) size += chunk.length;
  const canonical = new Uint8Array(size);
  size = 0;
  for (const chunk of out) {
    canonical.set(chunk, size);
    size += chunk.length;
  }
  return canonical;
}
