// Repro (package @idem/http): a keyed request whose body has no Content-Length and is larger
// than maxBodyBytes never gets its 413: readBodyLimited throws inside `for await` over a
// *tee branch* (request.clone().body); leaving the loop awaits cancel() of that branch, and a
// tee branch's cancel resolves only once the other branch (the handler's body) is cancelled too.
import { createIdempotencyHandler } from '@idem/http';
import { createMemoryStore } from '@idem/store-memory';

const handler = createIdempotencyHandler({
  store: createMemoryStore(),
  scope: () => ({ principal: 'p' }),
  maxBodyBytes: 1024,
});
const chunk = new Uint8Array(512).fill(97);
let pulled = 0;
const body = new ReadableStream({
  pull(c) {
    if (pulled++ < 8) c.enqueue(chunk);
    else c.close();
  },
}); // 4 KiB, no length
const request = new Request('http://x/charges', {
  method: 'POST',
  body,
  duplex: 'half',
  headers: { 'idempotency-key': 'k1', 'content-type': 'application/json' },
});
const outcome = await Promise.race([
  handler.handle(request, () => new Response('ran')).then((r) => `answered ${r.status}`),
  new Promise((r) => setTimeout(() => r('NO ANSWER after 3 s (expected 413)'), 3000)),
]);
console.log(outcome);
process.exit(0);
