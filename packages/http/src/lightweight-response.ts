/**
 * The body of a `Response` of @hono/node-server (1.19, 2.x) that is still lightweight: made
 * with a string, bytes or no body and never used as a Web `Response` since, so it holds its
 * status, headers and body in an array under a private symbol (`cache`), and becomes a real
 * `Response` (a Web stream over its body) only when something reads `body`, `statusText`,
 * `text()`... A string comes back as it was given: the server sends it as UTF-8, as
 * `TextEncoder` encodes it (a lone surrogate as U+FFFD).
 *
 * Only an exact match counts: node-server's own `cache` symbol (learned from the global
 * `Response`, which node-server replaces with its class: a look-alike with a symbol of the
 * same name is not it), holding an array of
 * three whose status is a number and whose body is a string, a `Uint8Array` or null, that the
 * response's own `status` and `headers` getters read (the getter returns the very `Headers`
 * it then holds), with no materialized `Response` beside it (`responseCache`). Anything else
 * (a real `Response`, another runtime's, a later node-server that keeps it differently, a
 * stream or a `Blob` body) gives undefined, and the caller reads `response.body` as for any
 * `Response`.
 * @internal
 */
export function lightweightBody(
  response: Response,
): { body: string | Uint8Array | null } | undefined {
  const key = lightweightCacheKey();
  if (key === undefined || !Object.hasOwn(response, key)) return undefined;
  for (const own of Object.getOwnPropertySymbols(response)) {
    if (own.description === 'responseCache') return undefined;
  }
  const cache = (response as unknown as Record<symbol, unknown>)[key];
  if (!Array.isArray(cache) || cache.length !== 3) return undefined;
  const [status, body] = cache as [unknown, unknown, unknown];
  if (typeof status !== 'number') return undefined;
  if (!(body === null || typeof body === 'string' || body instanceof Uint8Array)) return undefined;
  // Its getters read this array: the headers getter turns what it holds into `Headers` once,
  // in place, and returns that object; neither touches the body.
  if (response.status !== status) return undefined;
  const headers = response.headers;
  if (cache[2] !== headers || cache[1] !== body || typeof headers?.get !== 'function') {
    return undefined;
  }
  return { body };
}

/** The global `Response` last probed, and the `cache` symbol its instances carry (if any). */
let probed: { global: unknown; key: symbol | undefined } | undefined;

/**
 * The symbol under which the global `Response` keeps a lightweight response's parts, when
 * the global is @hono/node-server's class (it replaces it when it serves, unless told not
 * to): read from one instance made with a string, once per global class.
 */
function lightweightCacheKey(): symbol | undefined {
  const global = globalThis.Response;
  if (probed?.global === global) return probed.key;
  let key: symbol | undefined;
  try {
    const probe = new global('');
    for (const own of Object.getOwnPropertySymbols(probe)) {
      if (own.description === 'cache') key = own;
    }
  } catch {
    key = undefined;
  }
  probed = { global, key };
  return key;
}
