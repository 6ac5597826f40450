import { createMemoryStore } from '@idem/store-memory';
import { describe, expect, it } from 'vitest';
import { createIdempotencyHandler } from '../src/index.js';

/** A body without Content-Length that grows past `maxBodyBytes` gets its 413 at once. */
describe('an oversize streamed body', () => {
  it('is answered 413 by handle(), the handler never runs', async () => {
    const handler = createIdempotencyHandler({
      store: createMemoryStore(),
      scope: () => ({ principal: 'p' }),
      maxBodyBytes: 1_024,
    });
    const chunk = new Uint8Array(512).fill(97);
    let pulled = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (pulled++ < 8) controller.enqueue(chunk);
        else controller.close();
      },
    });
    const request = new Request('http://localhost/charges', {
      method: 'POST',
      body,
      duplex: 'half',
      headers: { 'idempotency-key': 'k1', 'content-type': 'application/json' },
    } as RequestInit);
    let ran = 0;
    const timeout = new Promise<'no answer'>((resolve) =>
      setTimeout(() => resolve('no answer'), 3_000).unref(),
    );
    const answer = await Promise.race([
      handler.handle(request, () => {
        ran++;
        return new Response('ran');
      }),
      timeout,
    ]);
    expect(answer).not.toBe('no answer');
    expect((answer as Response).status).toBe(413);
    expect(ran).toBe(0);
  });
});
