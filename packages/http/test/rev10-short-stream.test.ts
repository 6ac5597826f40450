import { createMemoryStore } from '@idem/store-memory';
import { describe, expect, it } from 'vitest';
import { createIdempotencyHandler } from '../src/index.js';

// rev10: the Web path's read-ahead (`recordWhole` in record-response.ts) answers a streamed
// body that ended within it as bytes, with the handler's headers as they were. A handler (or
// Hono's stream helpers) that set `Transfer-Encoding: chunked` on its streamed Response then
// gets a bytes Response that still says chunked: a Node server adapter that frames a bytes
// body by its length (@hono/node-server) sends both headers (see
// packages/hono/test/rev10-short-stream.test.ts for the bytes on the wire).

function streamed(text: string, headers: Record<string, string>): Response {
  return new Response(
    new ReadableStream({
      start(controller) {
        controller.enqueue(new TextEncoder().encode(text));
        controller.close();
      },
    }),
    { headers },
  );
}

async function firstExecution(headers: Record<string, string>) {
  const handler = createIdempotencyHandler({ store: createMemoryStore(), scope: 'global' });
  return handler.handle(
    new Request('http://localhost/completions', {
      method: 'POST',
      headers: { 'idempotency-key': 'short' },
    }),
    () => streamed('data: Hel\n\n', headers),
  );
}

describe('rev10 http: a short streamed response answered as bytes', () => {
  // FIXED (was FINDING HIGH): the bytes Response recordWhole answers keeps the handler's Transfer-Encoding: chunked (a framing header of the stream it replaced); with @hono/node-server the first caller gets Transfer-Encoding and Content-Length together
  it('the answered Response does not say Transfer-Encoding once its body is bytes', async () => {
    const response = await firstExecution({
      'content-type': 'text/event-stream',
      'transfer-encoding': 'chunked',
    });
    expect(await response.clone().text()).toBe('data: Hel\n\n');
    // Observed: 'chunked'.
    expect(response.headers.get('transfer-encoding')).toBeNull();
  });

  it('held: without such a header the answer is the body, same bytes, and the replay matches', async () => {
    const handler = createIdempotencyHandler({ store: createMemoryStore(), scope: 'global' });
    const request = () =>
      new Request('http://localhost/completions', {
        method: 'POST',
        headers: { 'idempotency-key': 'short2' },
      });
    const first = await handler.handle(request(), () =>
      streamed('data: Hel\n\n', { 'content-type': 'text/event-stream' }),
    );
    expect(await first.text()).toBe('data: Hel\n\n');
    const replay = await handler.handle(request(), () => new Response('ran again'));
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(await replay.text()).toBe('data: Hel\n\n');
  });
});
