/**
 * The parameters of a `Content-Type` value, read per RFC 9110 5.6.6: after the media type,
 * `*( OWS ";" OWS [ name "=" ( token / quoted-string ) ] )`, names case-insensitive, a
 * quoted-string's backslash escapes undone. A `;` or `boundary=` inside a quoted value is
 * part of that value (a regular expression that looks for `;\s*boundary=` finds one there,
 * where the app's parser does not).
 * @internal
 */

// RFC 9110 5.6.2 tchar.
const TCHAR = /[!#$%&'*+\-.^_`|~0-9A-Za-z]/;
const isTchar = (char: string): boolean => TCHAR.test(char);
/** qdtext: HTAB, SP, 0x21, 0x23-0x5B, 0x5D-0x7E, obs-text (0x80-0xFF). */
function isQdtext(code: number): boolean {
  return (
    code === 0x09 ||
    code === 0x20 ||
    code === 0x21 ||
    (code >= 0x23 && code <= 0x5b) ||
    (code >= 0x5d && code <= 0x7e) ||
    (code >= 0x80 && code <= 0xff)
  );
}
/** What may follow a backslash in a quoted-pair: HTAB, SP, VCHAR, obs-text. */
function isQuotedPairChar(code: number): boolean {
  return code === 0x09 || (code >= 0x20 && code <= 0x7e) || (code >= 0x80 && code <= 0xff);
}
const isOws = (char: string | undefined): boolean => char === ' ' || char === '\t';

/**
 * Each parameter name (lowercase) with its values in the order they appear (more than one
 * when the name is repeated); undefined when the parameter list does not parse (a name
 * that is not a token or has no `=`, an empty value, a quoted-string not closed, text after
 * a quoted-string, a control character or a stray quote in a value). An unquoted value runs
 * to the next `;` (see below). The media type itself (before the first `;`) is not looked at: it
 * holds no quotes.
 */
export function contentTypeParameters(
  contentType: string,
  how: { spacesAroundEquals?: boolean } = {},
): Map<string, string[]> | undefined {
  const params = new Map<string, string[]>();
  const text = contentType;
  let i = text.indexOf(';');
  if (i === -1) return params;
  const end = text.length;
  while (i < end) {
    while (isOws(text[i])) i++;
    if (i === end) break;
    if (text[i] !== ';') return undefined;
    i++;
    while (isOws(text[i])) i++;
    // An empty parameter (`;;`, a trailing `;`).
    if (i === end || text[i] === ';') continue;
    const nameStart = i;
    while (i < end && isTchar(text[i] as string)) i++;
    const nameEnd = i;
    // `charset = utf-8`: not RFC 9110, but body-parser (content-type) reads it so.
    if (how.spacesAroundEquals) while (isOws(text[i])) i++;
    if (nameEnd === nameStart || text[i] !== '=') return undefined;
    const name = text.slice(nameStart, nameEnd).toLowerCase();
    i++;
    if (how.spacesAroundEquals) while (isOws(text[i])) i++;
    let value = '';
    if (text[i] === '"') {
      i++;
      let closed = false;
      while (i < end) {
        const code = text.charCodeAt(i);
        if (code === 0x22) {
          closed = true;
          i++;
          break;
        }
        if (code === 0x5c) {
          const next = text.charCodeAt(i + 1);
          if (!(i + 1 < end && isQuotedPairChar(next))) return undefined;
          value += text[i + 1];
          i += 2;
          continue;
        }
        if (!isQdtext(code)) return undefined;
        value += text[i];
        i++;
      }
      if (!closed) return undefined;
    } else {
      // A token, as RFC 9110 says; beyond it, what the WHATWG MIME type parser (undici's
      // `formData()`) takes as the value: everything up to the next `;`, trailing OWS cut.
      // Clients draw multipart boundaries with `/`, `:`, `=`, `?` unquoted: busboy refuses
      // those, undici splits on them, and so does this (no quote, no control character).
      const valueStart = i;
      while (i < end && text[i] !== ';') {
        const code = text.charCodeAt(i);
        if (code === 0x22 || !isQdtext(code)) return undefined;
        i++;
      }
      let valueEnd = i;
      while (valueEnd > valueStart && isOws(text[valueEnd - 1])) valueEnd--;
      if (valueEnd === valueStart) return undefined;
      value = text.slice(valueStart, valueEnd);
    }
    const values = params.get(name);
    if (values) values.push(value);
    else params.set(name, [value]);
  }
  return params;
}
