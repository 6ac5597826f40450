import { canonicalPath, targetPath } from '@idem/http/node';
import type { Request } from 'express';

/**
 * The route a request's operation is named after. Mounted on a route
 * (`app.post('/charges', idempotency(...), handler)`), it is the route Express matched;
 * mounted with `app.use`, no route has matched yet, and it is the request's path in the one
 * spelling Express's default router routes alike (`canonicalPath` of `@idem/http/node`:
 * case, a trailing slash and percent-escapes do not matter).
 */
export function routeOf(req: Request): string {
  const route = req.route as { path?: unknown } | undefined;
  if (route?.path !== undefined) return `${canonicalPath(req.baseUrl)}${String(route.path)}`;
  return canonicalPath(targetPath(req.originalUrl));
}
