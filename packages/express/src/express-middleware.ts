import {
  bodyFromBytes,
  bodyFromParsed,
  createIdempotencyHandler,
  type HttpIdempotencyOptions,
  type IdempotencyContext,
  type RequestBody,
  readBodyLimited,
} from '@idem/http';
import { headerValue, recordServerResponse, sendWebResponse } from '@idem/http/node';
import type { Request, RequestHandler, Response } from 'express';

/** Options of {@link idempotency}: those of `@idem/http`, with hooks that get the Express request. */
export type ExpressIdempotencyOptions = HttpIdempotencyOptions<Request>;

async function readBody(req: Request, limit: number): Promise<RequestBody> {
  const contentType = headerValue(req.headers, 'content-type');
  // A body parser ran first (express.json, express.raw, express.text, express.urlencoded).
  if (req.body !== undefined) return bodyFromParsed(req.body, contentType, limit);
  const length = headerValue(req.headers, 'content-length');
  if ((length === undefined || length === '0') && req.headers['transfer-encoding'] === undefined) {
    return { kind: 'none' };
  }
  const bytes = await readBodyLimited(req, limit);
  const body = bodyFromBytes(bytes, contentType);
  // Read here, so later body parsers skip it: hand the app what express.json / express.raw would.
  req.body = body.kind === 'json' ? body.value : Buffer.from(bytes);
  return body;
}

/**
 * Express 5 middleware that makes POST and PATCH (by default) idempotent by their
 * `Idempotency-Key` header. Mount it before the routes it protects. The handler finds the
 * execution context (key, fence, abort signal) at `res.locals.idempotency`.
 */
export function idempotency(options: ExpressIdempotencyOptions): RequestHandler {
  const handler = createIdempotencyHandler<Request>(options);
  return async function idempotencyMiddleware(req, res, next) {
    const decision = await handler.begin({
      native: req,
      method: req.method,
      url: req.originalUrl,
      header: (name) => headerValue(req.headers, name),
      readBody: (limit) => readBody(req, limit),
    });
    if (decision.action === 'pass') return next();
    if (decision.action === 'respond') return sendWebResponse(res, decision.response);
    res.locals.idempotency = decision.recorder.context;
    recordServerResponse(res, decision.recorder);
    next();
  };
}

/** The execution context of the current request, when the middleware ran it idempotently. */
export function getIdempotency(res: Response): IdempotencyContext | undefined {
  return res.locals.idempotency as IdempotencyContext | undefined;
}
