import {
  bodyFromBytes,
  createIdempotencyHandler,
  type HttpIdempotencyOptions,
  type IncomingRequest,
  type ResponseRecorder,
  readBodyLimited,
  type ScopeHint,
} from '@idem/http';
import {
  type FetchHandler,
  type FrameworkDriver,
  fetchDriver,
  respondWithRoute,
  TENANT_HEADER,
} from '../src/index.js';

/** Deliberate bugs of a Web integration, each one a way real adapters went wrong. */
export type Bug =
  | 'none'
  | 'ignores-the-key'
  | 'shares-principals'
  | 'releases-on-disconnect'
  | 'ends-before-recording'
  | 'raw-path-operation'
  | 'ends-when-recording-failed'
  | 'first-of-repeated-headers'
  | 'reads-forever-after-disconnect'
  | 'hides-content-type';

const tenantScope = (request: Request) =>
  ({ principal: request.headers.get(TENANT_HEADER) ?? undefined }) as ScopeHint;

/** A Web integration of `@idem/http` (correct with 'none'), served by the suite's fetch driver. */
export function referenceDriver(bug: Bug): FrameworkDriver {
  return fetchDriver(({ options, routes }) => {
    const httpOptions: HttpIdempotencyOptions = {
      ...options,
      scope:
        bug === 'shares-principals'
          ? 'global'
          : bug === 'raw-path-operation'
            ? // The bug: an operation taken from the raw path, spelling and all.
              (request: Request) =>
                ({
                  ...tenantScope(request),
                  operation: `${request.method} ${new URL(request.url).pathname}`,
                }) as ScopeHint
            : tenantScope,
    };
    const idem = createIdempotencyHandler(httpOptions);
    // The router of a framework that folds case and trailing slashes into one route.
    const route = (request: Request) => {
      if (bug !== 'raw-path-operation') return respondWithRoute(routes, request);
      const url = new URL(request.url);
      url.pathname = url.pathname.toLowerCase().replace(/(.)\/$/, '$1');
      return respondWithRoute(routes, new Request(url, request));
    };
    if (bug === 'none' || bug === 'shares-principals' || bug === 'raw-path-operation')
      return (request) => idem.handle(request, route);
    if (bug === 'ignores-the-key') return route;
    return buggyBegin(bug, idem, route);
  });
}

/** Drives `begin` and the recorder by hand, the way an adapter does, with one bug. */
function buggyBegin(
  bug: Bug,
  idem: ReturnType<typeof createIdempotencyHandler>,
  route: FetchHandler,
): FetchHandler {
  return async (request) => {
    const incoming: IncomingRequest<Request> = {
      native: request,
      method: request.method,
      url: request.url,
      signal: request.signal,
      header: (name) => {
        if (bug === 'first-of-repeated-headers' && name.toLowerCase() === 'idempotency-key')
          return request.headers.get(name)?.split(', ')[0];
        if (bug === 'hides-content-type' && name.toLowerCase() === 'content-type') return undefined;
        return request.headers.get(name) ?? undefined;
      },
      readBody: async (limit) => {
        const bytes = await readBodyLimited(request.clone().body, limit);
        return bodyFromBytes(bytes, request.headers.get('content-type'));
      },
    };
    const decision = await idem.begin(incoming);
    if (decision.action === 'pass') return route(request);
    if (decision.action === 'respond') return decision.response;
    const { recorder } = decision;
    let response: Response;
    try {
      response = await route(request);
    } catch (error) {
      await recorder.fail(error);
      throw error;
    }
    if (bug === 'releases-on-disconnect') {
      request.signal.addEventListener('abort', () => void recorder.fail(new Error('gone')));
      return recorder.recordResponse(response);
    }
    if (bug === 'ends-before-recording') {
      // Sends one copy at once and records the other in the background.
      const [sent, recorded] = response.body!.tee();
      void recorder.recordResponse(new Response(recorded, response)).then((r) => r.arrayBuffer());
      return new Response(sent, response);
    }
    if (bug === 'reads-forever-after-disconnect') return readsForever(recorder, response);
    if (bug === 'ends-when-recording-failed') {
      recorder.start(response.status, response.headers);
      const bytes = new Uint8Array(await response.arrayBuffer());
      recorder.capture(bytes);
      await recorder.finish().catch(() => {});
      return new Response(bytes, response);
    }
    return recorder.recordResponse(response, request.signal);
  };
}

/** Streams and records by hand; after the client left it reads the body to its end, lease or not. */
function readsForever(recorder: ResponseRecorder, response: Response): Response {
  recorder.start(response.status, response.headers);
  const reader = response.body!.getReader();
  const stream = new ReadableStream<Uint8Array>({
    async pull(controller) {
      const read = await reader.read();
      if (read.done) {
        await recorder.finish();
        controller.close();
        return;
      }
      recorder.capture(read.value);
      controller.enqueue(read.value);
    },
    cancel() {
      void (async () => {
        for (let read = await reader.read(); !read.done; read = await reader.read())
          recorder.capture(read.value);
        await recorder.finish();
      })().catch(() => {});
    },
  });
  return new Response(stream, response);
}
