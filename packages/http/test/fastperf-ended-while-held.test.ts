import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createMemoryStore } from '@idem/store-memory';
import { afterEach, describe, expect, it } from 'vitest';
import { createIdempotencyHandler } from '../src/index.js';
import {
  headerValue,
  nodeRequestBody,
  recordServerResponse,
  sendDecisionResponse,
} from '../src/node.js';

// fastperf: `recordServerResponse`'s `endedWhileHeld` (what @idem/fastify asks for, as Fastify
// reads `reply.sent` from it): `res.writableEnded` reads true from the app's `end` on, while
// that end waits for the record; by default it reads true only once the held end went out.

const servers: Server[] = [];
afterEach(async () => {
  for (const server of servers.splice(0))
    await new Promise((resolve) => server.close(() => resolve(undefined)));
});

async function serve(endedWhileHeld: boolean | undefined) {
  const handler = createIdempotencyHandler<IncomingMessage>({
    store: createMemoryStore(),
    scope: 'global',
    leaseMs: 1_000,
  });
  const seen: { afterEnd: boolean; afterRecord?: boolean; finishedAfterEnd: boolean }[] = [];
  const server = createServer(async (req, res) => {
    const decision = await handler.begin({
      native: req,
      method: req.method ?? 'GET',
      url: `http://localhost${req.url}`,
      header: (name) => headerValue(req.headers, name),
      readBody: (limit) => nodeRequestBody(req, undefined, limit),
    });
    if (decision.action === 'respond') return sendDecisionResponse(res, decision);
    if (decision.action !== 'execute') {
      res.statusCode = 500;
      res.end(decision.action);
      return;
    }
    recordServerResponse(
      res,
      decision.recorder,
      endedWhileHeld === undefined ? undefined : { endedWhileHeld },
    );
    res.statusCode = 201;
    res.setHeader('content-type', 'application/json');
    const view: (typeof seen)[number] = {
      afterEnd: false,
      finishedAfterEnd: false,
    };
    res.once('finish', () => {
      view.afterRecord = res.writableEnded;
    });
    res.end('{"ok":true}');
    view.afterEnd = res.writableEnded;
    view.finishedAfterEnd = res.writableFinished;
    seen.push(view);
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const post = async (key: string) => {
    const response = await fetch(`${url}/orders`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': key },
      body: '{}',
      signal: AbortSignal.timeout(5_000),
    });
    return { status: response.status, body: await response.text() };
  };
  return { post, seen };
}

describe('recordServerResponse: writableEnded while the end waits for the record', () => {
  it('endedWhileHeld: reads true right after end (not finished yet), and after; the outcome is recorded and replayed', async () => {
    const { post, seen } = await serve(true);
    expect(await post('held-1')).toEqual({ status: 201, body: '{"ok":true}' });
    expect(seen).toEqual([{ afterEnd: true, finishedAfterEnd: false, afterRecord: true }]);
    expect(await post('held-1')).toEqual({ status: 201, body: '{"ok":true}' });
    expect(seen).toHaveLength(1);
  });

  for (const given of [undefined, false]) {
    it(`endedWhileHeld ${String(given)} (the default): reads false until the held end went out, then true`, async () => {
      const { post, seen } = await serve(given);
      expect(await post('default-1')).toEqual({ status: 201, body: '{"ok":true}' });
      expect(seen).toEqual([{ afterEnd: false, finishedAfterEnd: false, afterRecord: true }]);
    });
  }
});
