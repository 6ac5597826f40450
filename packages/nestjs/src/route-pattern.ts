import { canonicalPath, targetPath } from '@idem/http/node';
import type { NestHttpRequest } from './options.js';

/**
 * The route pattern Nest matched, which names the operation: `request.routeOptions.url` on
 * Fastify, `request.route.path` on Express (Nest registers every route with its full path);
 * else the request's path in one spelling (case, a trailing slash and percent-escapes do not
 * matter), which merges no two routes.
 */
export function routePattern(request: NestHttpRequest & { originalUrl?: string }): string {
  const fastify = (request as { routeOptions?: { url?: unknown } }).routeOptions?.url;
  if (typeof fastify === 'string') return fastify;
  const express = request as { route?: { path?: unknown }; baseUrl?: unknown };
  if (typeof express.route?.path === 'string') {
    const base = typeof express.baseUrl === 'string' ? canonicalPath(express.baseUrl) : '';
    return `${base === '/' ? '' : base}${express.route.path}`;
  }
  return canonicalPath(targetPath(request.originalUrl ?? request.url));
}
