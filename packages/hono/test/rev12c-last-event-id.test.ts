/**
 * rev12c (adversarial review of 94a3db0/9ce9ee9): Hono on @hono/node-server reads
 * `Last-Event-ID` from Web `Headers` (a byte string); @idem/http decodes it by UTF-8. The
 * tests are the conformance kit's (`describeLastEventIdBytes`).
 */
import { type ServerType, serve } from '@hono/node-server';
import { describeLastEventIdBytes, LAST_EVENT_ID_EVENTS } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { Hono } from 'hono';
import { idempotency } from '../src/index.js';

describeLastEventIdBytes('rev12c Hono', async () => {
  let runs = 0;
  const app = new Hono();
  app.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
  app.post('/stream', () => {
    runs++;
    const encoder = new TextEncoder();
    let n = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        controller.enqueue(encoder.encode(LAST_EVENT_ID_EVENTS[n++] as string));
        if (n === LAST_EVENT_ID_EVENTS.length) controller.close();
      },
    });
    return new Response(body, { headers: { 'content-type': 'text/event-stream' } });
  });
  let server: ServerType | undefined;
  const port = await new Promise<number>((resolve) => {
    server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, (info) =>
      resolve(info.port),
    );
  });
  return {
    url: `http://127.0.0.1:${port}`,
    runs: () => runs,
    close: () => new Promise((resolve) => server?.close(resolve)),
  };
});
