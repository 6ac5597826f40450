// Repro (package @idem/core canonicalJson, reached through @idem/http's fingerprint): a valid
// JSON body nested 20,000 deep (40 KB) overflows the stack in canonicalJson's recursion. The
// RangeError escapes @idem/http's begin() untyped, so every framework answers 500 instead of
// a 4xx (issue 10 item 8: "bound depth or iterate; fall back to fingerprinting the bytes").
// Still present on main. llm-api now refuses such bodies itself (request-guard.ts).
// Run: node apps/llm-api/test/repro/core-deep-json.mjs
import { createIdempotencyHandler } from '@idem/http';
import { createMemoryStore } from '@idem/store-memory';

const handler = createIdempotencyHandler({
  store: createMemoryStore(),
  scope: () => ({ principal: 'p' }),
});
const body = `{"a":${'['.repeat(20_000)}${']'.repeat(20_000)}}`;
const request = new Request('http://x/charges', {
  method: 'POST',
  body,
  headers: { 'idempotency-key': 'k1', 'content-type': 'application/json' },
});
try {
  const response = await handler.handle(request, () => new Response('ran'));
  console.log(`answered ${response.status}`);
} catch (error) {
  console.log(`BROKEN: handle() threw ${error.name}: ${error.message} (a framework answers 500)`);
}
