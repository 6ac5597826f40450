import type { Request } from 'express';

/**
 * One spelling for the paths Express's default router sends to the same route with the same
 * parameters: it matches without regard to case and with an optional trailing slash, and
 * percent-decodes each parameter. Merging more spellings than the router does is safe (the
 * raw path stays in the fingerprint, so a retry through another spelling gets 422); merging
 * fewer would run a route twice under one key. Dot segments and doubled slashes are left as
 * they are: Express does not route `/x/../charges` or `//charges` to `/charges`.
 */
export function canonicalPath(path: string): string {
  const decoded = path.replace(/%([0-9a-f]{2})/gi, (_escape, hex: string) =>
    // An encoded slash stays one: `a%2Fb` is one path segment, `a/b` two.
    hex.toLowerCase() === '2f' ? '%2f' : String.fromCharCode(Number.parseInt(hex, 16)),
  );
  return decoded.toLowerCase().replace(/\/+$/, '') || '/';
}

function pathOf(target: string): string {
  if (target.startsWith('/')) return target.split(/[?#]/, 1)[0] ?? '/';
  // Absolute form (a proxy request): `http://host/path?query`.
  try {
    return new URL(target).pathname;
  } catch {
    return target;
  }
}

/**
 * The route a request's operation is named after. Mounted on a route
 * (`app.post('/charges', idempotency(...), handler)`), it is the route Express matched;
 * mounted with `app.use`, no route has matched yet, and it is the request's path in the one
 * spelling Express routes alike ({@link canonicalPath}).
 */
export function routeOf(req: Request): string {
  const route = req.route as { path?: unknown } | undefined;
  if (route?.path !== undefined) return `${canonicalPath(req.baseUrl)}${String(route.path)}`;
  return canonicalPath(pathOf(req.originalUrl));
}
