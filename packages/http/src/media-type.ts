/**
 * The media type of a `Content-Type` value, lowercase, without parameters ('' when absent).
 * One `indexOf` and a slice: no array of parts (this runs on every first execution).
 * @internal
 */
export function mediaType(contentType: string | null | undefined): string {
  if (contentType === undefined || contentType === null) return '';
  const end = contentType.indexOf(';');
  return (end === -1 ? contentType : contentType.slice(0, end)).trim().toLowerCase();
}
