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
 * `value instanceof target` for a class {@link brandError} brands: the usual prototype check,
 * and for `own` itself (the class that declares the check, not a subclass) an instance of the
 * other copy of it too.
 * @internal
 */
export function isBranded(target: object, own: object, name: string, value: unknown): boolean {
  if (Function.prototype[Symbol.hasInstance].call(target, value)) return true;
  return (
    target === own &&
    typeof value === 'object' &&
    value !== null &&
    (value as Record<symbol, unknown>)[Symbol.for(`@idem/http.${name}`)] === true
  );
}
