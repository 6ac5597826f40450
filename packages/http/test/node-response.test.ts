import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { listening, type RunningApp, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { afterEach, describe, expect, it } from 'vitest';
import {
  bodyFromBytes,
  createIdempotencyHandler,
  type HttpIdempotencyOptions,
  REPLAYED_HEADER,
  readBodyLimited,
} from '../src/index.js';
import { headerValue, recordServerResponse, requestUrl, sendWebResponse } from '../src/node.js';

// recordServerResponse on a plain node:http server, driven by apps that misuse the response
// the way real apps do. Whatever the app does, the first caller and every replay see the
// same bytes, and the key is settled.

type App = (req: IncomingMessage, res: ServerResponse) => void | Promise<void>;

const apps: RunningApp[] = [];
afterEach(async () => {
  await Promise.all(apps.splice(0).map((app) => app.close()));
});

async function serve(app: App, options: Partial<HttpIdempotencyOptions<IncomingMessage>> = {}) {
  const idem = createIdempotencyHandler<IncomingMessage>({
    store: createMemoryStore(),
    scope: 'global',
    onWarning: () => {},
    ...options,
  });
  const server = createServer(async (req, res) => {
    const decision = await idem.begin({
      native: req,
      method: req.method ?? 'GET',
      url: requestUrl(req.url ?? '/'),
      header: (name) => headerValue(req.headers, name),
      readBody: async (limit) =>
        bodyFromBytes(await readBodyLimited(req, limit), req.headers['content-type']),
    });
    if (decision.action === 'respond') return sendWebResponse(res, decision.response);
    if (decision.action === 'execute') recordServerResponse(res, decision.recorder);
    try {
      await app(req, res);
    } catch (error) {
      // The app's error handler: a plain 500.
      res.statusCode = 500;
      res.end(`app error: ${(error as Error).message}`);
    }
  });
  server.listen(0, '127.0.0.1');
  const running = await listening(server);
  apps.push(running);
  return running.url;
}

describe('recordServerResponse with apps that misuse the response', () => {
  it('a write after end does not reach the first caller ahead of the body: it sees what replays see', async () => {
    let runs = 0;
    const errors: string[] = [];
    const url = await serve((_req, res) => {
      runs++;
      res.on('error', (error) => errors.push((error as NodeJS.ErrnoException).code ?? ''));
      res.end('the body');
      res.write('late');
    });
    const first = await send(url, '/w', { key: 'write-after-end', body: {} });
    const replay = await send(url, '/w', { key: 'write-after-end', body: {} });
    expect(first.body.toString()).toBe('the body');
    expect(replay.headers[REPLAYED_HEADER]).toBe('true');
    expect(replay.body.equals(first.body)).toBe(true);
    expect(runs).toBe(1);
    // As without the recorder: Node refuses a write after end.
    expect(errors).toEqual(['ERR_STREAM_WRITE_AFTER_END']);
  });

  it('an outcome policy that throws releases the key, and the app can still answer (no hung response)', async () => {
    let runs = 0;
    const url = await serve(
      (_req, res) => {
        runs++;
        res.setHeader('x-bad', '1');
        res.end('fine');
      },
      {
        isFinal: (head) => {
          if (head.headers.get('x-bad')) throw new Error('policy bug');
          return true;
        },
      },
    );
    const first = await send(url, '/p', { key: 'policy-throws', body: {}, timeoutMs: 2_000 });
    expect(first.status).toBe(500);
    expect(first.body.toString()).toBe('app error: policy bug');
    const again = await send(url, '/p', { key: 'policy-throws', body: {}, timeoutMs: 2_000 });
    expect(again.status).toBe(500);
    expect(again.headers[REPLAYED_HEADER]).toBeUndefined();
    expect(runs).toBe(2); // released, never held: the retry runs again
  });

  it('a status a Web Response cannot carry (999) is not recorded under a policy that records everything', async () => {
    let runs = 0;
    const url = await serve(
      (_req, res) => {
        runs++;
        res.statusCode = 999;
        res.end('custom status');
      },
      { isFinal: () => true },
    );
    const first = await send(url, '/s', { key: 'status-999', body: {} });
    expect(first.status).toBe(999);
    // Recorded, every retry would get a 500 for the key's retention (the replay cannot be built).
    const again = await send(url, '/s', { key: 'status-999', body: {} });
    expect(again.status).toBe(999);
    expect(again.headers[REPLAYED_HEADER]).toBeUndefined();
    expect(runs).toBe(2);
  });
});
