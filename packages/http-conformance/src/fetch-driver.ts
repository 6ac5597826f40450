import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { listening } from './client.js';
import type { FrameworkDriver, ScenarioAppConfig } from './options.js';
import { TENANT_HEADER } from './options.js';
import type { Behaviour, Reply } from './routes.js';

/** A Web fetch handler: what Next.js route handlers, Bun, Deno and workers serve. */
export type FetchHandler = (request: Request) => Response | Promise<Response>;

/**
 * A driver for integrations that are Web fetch handlers: `build` makes the handler for one
 * scenario (mounting the integration with `config.options` and the scope hook, routing
 * with {@link respondWithRoute}), and the driver serves it on loopback through `node:http`.
 * The request's `signal` aborts when the client goes away; a response body whose client
 * went away is cancelled; a handler that throws is answered with a plain 500.
 */
export function fetchDriver(build: (config: ScenarioAppConfig) => FetchHandler): FrameworkDriver {
  return {
    async start(config) {
      const handler = build(config);
      const server = createServer((req, res) => void serve(handler, req, res));
      server.listen(0, '127.0.0.1');
      return listening(server);
    },
  };
}

async function serve(handler: FetchHandler, req: IncomingMessage, res: ServerResponse) {
  const gone = new AbortController();
  res.once('close', () => {
    if (!res.writableFinished) gone.abort(new Error('The client went away'));
  });
  const headers = new Headers();
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2)
    headers.append(req.rawHeaders[i] as string, req.rawHeaders[i + 1] as string);
  const hasBody = req.method !== 'GET' && req.method !== 'HEAD';
  const request = new Request(`http://127.0.0.1${req.url ?? '/'}`, {
    method: req.method ?? 'GET',
    headers,
    signal: gone.signal,
    ...(hasBody ? { body: Readable.toWeb(req) as ReadableStream, duplex: 'half' } : {}),
  } as RequestInit);
  let response: Response;
  try {
    response = await handler(request);
  } catch {
    response = new Response('Internal Server Error', { status: 500 });
  }
  res.statusCode = response.status;
  for (const [name, value] of response.headers) {
    if (name !== 'set-cookie') res.setHeader(name, value);
  }
  const cookies = response.headers.getSetCookie();
  if (cookies.length > 0) res.setHeader('set-cookie', cookies);
  if (response.body === null) {
    res.end();
    return;
  }
  const reader = response.body.getReader();
  // The client went away: cancel the body, as Web servers do.
  gone.signal.addEventListener('abort', () => void reader.cancel().catch(() => {}), { once: true });
  try {
    for (let read = await reader.read(); !read.done; read = await reader.read()) {
      if (gone.signal.aborted) return;
      res.write(read.value);
    }
    res.end();
  } catch (error) {
    res.destroy(error instanceof Error ? error : new Error(String(error)));
  }
}

/**
 * Answers `request` with the behaviour of `routes` at exactly its path (404 otherwise):
 * parses a JSON body as JSON and any other body as bytes, and writes the {@link Reply} as a
 * `Response` whose body streams chunk by chunk (and errors when the behaviour's stream
 * throws). A behaviour that throws rejects.
 */
export async function respondWithRoute(
  routes: ReadonlyMap<string, Behaviour>,
  request: Request,
): Promise<Response> {
  const url = new URL(request.url);
  const behaviour = routes.get(url.pathname);
  if (!behaviour) return new Response('Not Found', { status: 404 });
  const bytes = new Uint8Array(await request.arrayBuffer());
  const isJson = /json/.test(request.headers.get('content-type') ?? '');
  const body =
    bytes.length === 0 ? undefined : isJson ? JSON.parse(new TextDecoder().decode(bytes)) : bytes;
  const reply = await behaviour({
    body,
    query: url.searchParams,
    tenant: request.headers.get(TENANT_HEADER) ?? undefined,
  });
  return replyToResponse(reply);
}

/** A {@link Reply} as a Web `Response` (a streamed body as a stream of its chunks). */
export function replyToResponse(reply: Reply): Response {
  if (reply.body instanceof Uint8Array)
    return new Response(reply.body, { status: reply.status, headers: reply.headers });
  const iterator = reply.body[Symbol.asyncIterator]();
  const stream = new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        const next = await iterator.next();
        if (next.done) controller.close();
        else controller.enqueue(next.value);
      },
      async cancel() {
        await iterator.return?.();
      },
    },
    { highWaterMark: 0 },
  );
  return new Response(stream, { status: reply.status, headers: reply.headers });
}
