import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { listening, type RunningApp } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import {
  bodyFromBytes,
  createIdempotencyHandler,
  type HttpIdempotencyOptions,
  type IncomingRequest,
  readBodyLimited,
} from '../../src/index.js';
import { headerValue, recordServerResponse, requestUrl, sendWebResponse } from '../../src/node.js';

/** A `node:http` request as `begin()` takes it (the body read whole, up to its limit). */
export function described(req: IncomingMessage): IncomingRequest<IncomingMessage> {
  return {
    native: req,
    method: req.method ?? 'GET',
    url: requestUrl(req.url ?? '/'),
    header: (name) => headerValue(req.headers, name),
    readBody: async (limit) =>
      bodyFromBytes(await readBodyLimited(req, limit), req.headers['content-type']),
  };
}

/** A handler of the app under test, on a plain `node:http` server. */
export type RecordedApp = (req: IncomingMessage, res: ServerResponse) => void | Promise<void>;

const running: RunningApp[] = [];
/** The server side of every connection accepted, in order (for tests that cut one). */
export const serverSockets: Socket[] = [];

/**
 * A `node:http` server on loopback whose responses go through `recordServerResponse` (memory
 * store, `scope: 'global'`); an app that throws gets a plain 500 when nothing was sent yet,
 * as Express's finalhandler answers. Resolves to its URL; {@link closeRecordedServers} stops it.
 */
export async function serveRecorded(
  app: RecordedApp,
  options: Partial<HttpIdempotencyOptions<IncomingMessage>> = {},
): Promise<string> {
  const idem = createIdempotencyHandler<IncomingMessage>({
    store: createMemoryStore(),
    scope: 'global',
    onWarning: () => {},
    ...options,
  });
  const server = createServer(async (req, res) => {
    const decision = await idem.begin(described(req));
    if (decision.action === 'respond') return sendWebResponse(res, decision.response);
    if (decision.action === 'execute') recordServerResponse(res, decision.recorder);
    try {
      await app(req, res);
    } catch (error) {
      if (!res.headersSent) {
        res.statusCode = 500;
        res.end(`app error: ${(error as Error).message}`);
      }
    }
  });
  server.on('connection', (socket) => serverSockets.push(socket));
  server.listen(0, '127.0.0.1');
  const app_ = await listening(server);
  running.push(app_);
  return app_.url;
}

/** Stops every server {@link serveRecorded} started. */
export async function closeRecordedServers(): Promise<void> {
  serverSockets.length = 0;
  await Promise.all(running.splice(0).map((app) => app.close()));
}
