/**
 * The media type of a `Content-Type` value, lowercase, without parameters ('' when absent).
 * One `indexOf` and a slice: no array of parts (this runs on every first execution). The
 * first `;` always ends the media type: a quoted-string (where a `;` may be part of a value)
 * can only come after it, in a parameter (see `contentTypeParameters` for those). Only OWS
 * (SP, HTAB) around it is cut, as parsers cut it: String#trim also takes U+00A0 (the byte A0),
 * and `application/json\u00a0` is no media type to type-is (body-parser, Koa), which leaves
 * such a body unparsed, while it was `application/json` here (fprev23).
 * @internal
 */
export function mediaType(contentType: string | null | undefined): string {
  if (contentType === undefined || contentType === null) return '';
  const end = contentType.indexOf(';');
  return trimOws(end === -1 ? contentType : contentType.slice(0, end)).toLowerCase();
}

/**
 * `text` without the optional white space HTTP allows around a field value (RFC 9110 5.5: SP
 * and HTAB only; `text` itself when there is none). Not `String.prototype.trim`, which also
 * drops Unicode white space: Node reads a header byte past 0x7F as Latin-1, so a NO-BREAK
 * SPACE (0xA0) sent around a key or a media type was dropped and the value taken as another.
 * @internal
 */
export function trimOws(text: string): string {
  let start = 0;
  let end = text.length;
  while (start < end && isOwsCode(text.charCodeAt(start))) start++;
  while (end > start && isOwsCode(text.charCodeAt(end - 1))) end--;
  return start === 0 && end === text.length ? text : text.slice(start, end);
}

const isOwsCode = (code: number): boolean => code === 0x20 || code === 0x09;
