// The HTTP suite's request (`POST /orders`, a small JSON body) through `begin()` and, for a
// first execution, the recorder fed the suite's 201 JSON response; on the memory store with
// `scope: 'global'`. Shared by bench/cold.mjs and bench/alloc.mjs.
import { bodyFromBytes, createIdempotencyHandler } from '@idem/http';
import { createMemoryStore } from '@idem/store-memory';

const body = Buffer.from(JSON.stringify({ sku: 'A-1', qty: 2 }));
const responseBody = Buffer.from(JSON.stringify({ id: 1, sku: 'A-1', qty: 2, status: 'created' }));
const responseHeaders = new Headers({
  'content-type': 'application/json; charset=utf-8',
  'content-length': String(responseBody.length),
});
const base = { 'content-type': 'application/json', 'content-length': String(body.length) };

/** A function that sends one such request under `key` (a replay when the key was used). */
export function ordersRequest() {
  const handler = createIdempotencyHandler({
    store: createMemoryStore({ maxEntries: 2_000_000, maxBytes: 2 ** 31 }),
    scope: 'global',
  });
  return async function one(key) {
    const headers = { ...base, 'idempotency-key': key };
    const decision = await handler.begin({
      native: {},
      method: 'POST',
      url: '/orders',
      route: '/orders',
      header: (name) => headers[name],
      readBody: async () => bodyFromBytes(body, 'application/json'),
    });
    if (decision.action === 'execute') {
      decision.recorder.start(201, responseHeaders);
      decision.recorder.capture(responseBody);
      await decision.recorder.finish();
    } else if (!decision.replayed) throw new Error(`not replayed: ${decision.action}`);
  };
}
