/**
 * The media type of a `Content-Type` value, lowercase, without parameters ('' when absent).
 * One `indexOf` and a slice: no array of parts (this runs on every first execution). The
 * first `;` always ends the media type: a quoted-string (where a `;` may be part of a value)
 * can only come after it, in a parameter (see `contentTypeParameters` for those).
 * @internal
 */
export function mediaType(contentType: string | null | undefined): string {
  if (contentType === undefined || contentType === null) return '';
  const end = contentType.indexOf(';');
  return (end === -1 ? contentType : contentType.slice(0, end)).trim().toLowerCase();
}
