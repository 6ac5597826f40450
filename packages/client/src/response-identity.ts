/**
 * A Response built with `new Response` has an empty `url`, `redirected` false and `type`
 * `'default'`; the one fetch answered has its own. A copy handed to the caller in its place
 * (its body rebuilt) keeps them, so code that reads `response.url` sees the request's URL;
 * and so does every `clone()` of it (the platform's clone copies only the internal state, in
 * which the copy has no URL: the rev31a review).
 */
export function withIdentityOf(copy: Response, original: Response): Response {
  for (const name of ['url', 'redirected', 'type'] as const) {
    Object.defineProperty(copy, name, { value: original[name], enumerable: true });
  }
  const clone = copy.clone;
  Object.defineProperty(copy, 'clone', {
    value: function cloneWithIdentity(this: Response): Response {
      return withIdentityOf(Reflect.apply(clone, this, []) as Response, original);
    },
    writable: true,
    configurable: true,
  });
  return copy;
}
