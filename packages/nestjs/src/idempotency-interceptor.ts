import type { IncomingMessage, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import {
  headerValue,
  nodeRequestBody,
  recordServerResponse,
  requestUrl,
  sendDecisionResponse,
} from '@idem/http/node';
import {
  type CallHandler,
  type ExecutionContext,
  Inject,
  Injectable,
  type NestInterceptor,
  StreamableFile,
} from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import { NEVER, Observable, type Subscription } from 'rxjs';
import { IdempotencyService } from './idempotency-service.js';
import { IDEMPOTENT_METADATA, type IdempotentOptions, type NestHttpRequest } from './options.js';
import { routePattern } from './route-pattern.js';

/** Where `@Version()` and `@Controller({ version })` keep a route's version (Nest 11 and 12). */
const VERSION_METADATA = '__version__';

type PlatformRequest = NestHttpRequest & { originalUrl?: string; idempotency?: unknown };
/** Express's `Response` is the Node response; Fastify's reply holds it as `raw`. */
type PlatformResponse = ServerResponse & { raw?: ServerResponse; hijack?: () => void };

/**
 * A stream the handler answers with that fails midway must abort the response: ended instead
 * (as `StreamableFile`'s default error handler does on Nest 12.0 once headers are out), the
 * truncated body would be recorded as a success. Registered before Nest's own listener (added
 * when it sends the value), this one runs first; Nest's then finds the response destroyed.
 */
function abortOnStreamError(value: unknown, res: ServerResponse): void {
  const stream = value instanceof StreamableFile ? value.getStream() : value;
  if (stream instanceof Readable) {
    stream.once('error', (error) => {
      if (res.headersSent && !res.writableEnded) res.destroy(error);
    });
  }
}

/**
 * Runs the routes marked with `@Idempotent()` through `@idem/http`. It runs after the guards
 * (so `request.user` is set) and before pipes and the handler. A replay or one of the
 * library's own answers (400, 409, 422, 503...) is written to the Node response as recorded,
 * byte for byte, and the route is not run: Nest sends nothing more for it (the observable
 * never emits, so interceptors around this one see no value for such a request). A run is
 * recorded where every platform writes its answer, the Node response: JSON, a
 * `StreamableFile`, an SSE stream or a `@Res()` write are recorded as they went out.
 */
@Injectable()
export class IdempotencyInterceptor implements NestInterceptor {
  @Inject(IdempotencyService) private readonly service!: IdempotencyService;
  @Inject(Reflector) private readonly reflector!: Reflector;

  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    if (context.getType() !== 'http') return next.handle();
    const route = this.reflector.getAllAndOverride<IdempotentOptions | false | undefined>(
      IDEMPOTENT_METADATA,
      [context.getHandler(), context.getClass()],
    );
    if (route === undefined || route === false) return next.handle();
    const operation = route.operation ?? this.#operationOf(context);
    const http = context.switchToHttp();
    const request = http.getRequest<PlatformRequest>();
    const response = http.getResponse<PlatformResponse>();
    // By hand rather than with operators, which the rxjs root entry has only since 7.2.
    return new Observable((subscriber) => {
      let inner: Subscription | undefined;
      this.#run(route, operation, request, response, next).then(
        ({ result, res }) => {
          if (subscriber.closed) return;
          inner = result.subscribe({
            next: (value) => {
              if (res) abortOnStreamError(value, res);
              subscriber.next(value);
            },
            error: (error: unknown) => subscriber.error(error),
            complete: () => subscriber.complete(),
          });
        },
        (error: unknown) => subscriber.error(error),
      );
      return () => inner?.unsubscribe();
    });
  }

  /**
   * The route pattern Nest matched, and the version of the handler when it has one: with
   * header or media-type versioning, handlers of several versions share one path, and a key
   * taken on one must not replay its answer to a request the other serves.
   */
  #operationOf(context: ExecutionContext): (request: NestHttpRequest) => string {
    const version = this.reflector.getAllAndOverride<unknown>(VERSION_METADATA, [
      context.getHandler(),
      context.getClass(),
    ]);
    if (version === undefined) return routePattern;
    const label = (one: unknown) => (typeof one === 'string' ? one : 'neutral');
    const versions = (Array.isArray(version) ? version : [version]).map(label).join(',');
    return (request) => `${routePattern(request)} version=${versions}`;
  }

  async #run(
    route: IdempotentOptions,
    operation: string | ((request: NestHttpRequest) => string),
    request: PlatformRequest,
    response: PlatformResponse,
    next: CallHandler,
  ): Promise<{ result: Observable<unknown>; res?: ServerResponse }> {
    const raw: IncomingMessage = request.raw ?? (request as unknown as IncomingMessage);
    const decision = await this.service.handlerFor(route).begin({
      native: request,
      method: request.method,
      url: requestUrl(request.originalUrl ?? request.url),
      route: typeof operation === 'string' ? operation : operation(request),
      header: (name) => headerValue(raw.headers, name),
      // Parsed by the platform (JSON, text, a raw parser), or read and put back.
      readBody: (limit) => nodeRequestBody(raw, request.body, limit),
    });
    if (decision.action === 'pass') return { result: next.handle() };
    const res = response.raw ?? response;
    if (decision.action === 'respond') {
      // Fastify: the reply is ours to write (Fastify neither sends nor warns about it).
      response.hijack?.();
      await sendDecisionResponse(res, decision);
      return { result: NEVER };
    }
    request.idempotency = decision.recorder.context;
    recordServerResponse(res, decision.recorder);
    return { result: next.handle(), res };
  }
}
