/**
 * The CommonJS build bundles each entry point (`@idem/http`, `@idem/http/node`) with its own
 * copy of the modules they share, so an error class exists twice there: an error thrown by one
 * entry's code (`nodeRequestBody` of `@idem/http/node`) failed `instanceof` against the other's
 * class (`begin` of `@idem/http`), and a body over `maxBodyBytes` or a malformed form got a 500
 * instead of its 413 or 400. Each such instance carries a registered symbol naming its class,
 * which both copies read.
 * @internal
 */
export function brandError(error: Error, name: string): void {
  Object.defineProperty(error, Symbol.for(`@idem/http.${name}`), { value: true });
}

/**
 * `value instanceof target` for a class {@link brandError} brands: an instance of either copy
 * of `own` (the class that declares the check), and for a subclass of it, the usual prototype
 * check.
 * @internal
 */
export function isBranded(target: object, own: object, name: string, value: unknown): boolean {
  if (target !== own) return Function.prototype[Symbol.hasInstance].call(target, value);
  return (
    typeof value === 'object' &&
    value !== null &&
    (value as Record<symbol, unknown>)[Symbol.for(`@idem/http.${name}`)] === true
  );
}
