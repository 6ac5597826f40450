/**
 * The way Next.js's App Router calls route handlers, without Next: a route module exports one
 * function per HTTP method, called with the request (a `NextRequest`, a subclass of
 * `Request`) and `{ params }`, a promise of the dynamic segments (`[id]`) since Next 15; a
 * method the module does not export gets 405 with `Allow`; a path no module matches, 404.
 */
export type RouteContext = { params: Promise<Record<string, string>> };
export type RouteHandler = (request: Request, context: RouteContext) => Promise<Response>;
export type RouteModule = Partial<
  Record<'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE', RouteHandler>
>;

/** Stands in for `NextRequest`: a `Request` subclass with `nextUrl`. */
class NextLikeRequest extends Request {
  readonly nextUrl: URL;
  constructor(request: Request) {
    super(request);
    this.nextUrl = new URL(request.url);
  }
}

function match(pattern: string, path: string): Record<string, string> | undefined {
  const want = pattern.split('/');
  const got = path.split('/');
  if (want.length !== got.length) return undefined;
  const params: Record<string, string> = {};
  for (const [i, segment] of want.entries()) {
    const value = got[i] as string;
    const dynamic = /^\[(\w+)\]$/.exec(segment);
    if (dynamic) params[dynamic[1] as string] = decodeURIComponent(value);
    else if (segment !== value) return undefined;
  }
  return params;
}

/** A fetch handler routing to `modules` (pattern, e.g. `/api/orders/[id]/pay`, -> module). */
export function appRouter(modules: Record<string, RouteModule>) {
  return async (request: Request): Promise<Response> => {
    const { pathname } = new URL(request.url);
    for (const [pattern, module] of Object.entries(modules)) {
      const params = match(pattern, pathname);
      if (!params) continue;
      const handler = module[request.method as keyof RouteModule];
      if (!handler)
        return new Response(null, {
          status: 405,
          headers: { allow: Object.keys(module).join(', ') },
        });
      return handler(new NextLikeRequest(request), { params: Promise.resolve(params) });
    }
    return new Response('Not Found', { status: 404 });
  };
}
