/**
 * A Response built with `new Response` has an empty `url`, `redirected` false and `type`
 * `'default'`; the one fetch answered has its own. A copy handed to the caller in its place
 * (its body rebuilt) keeps them, so code that reads `response.url` sees the request's URL.
 */
export function withIdentityOf(copy: Response, original: Response): Response {
  for (const name of ['url', 'redirected', 'type'] as const) {
    Object.defineProperty(copy, name, { value: original[name], enumerable: true });
  }
  return copy;
}
