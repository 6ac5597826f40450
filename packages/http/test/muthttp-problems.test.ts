import { createMemoryStore } from '@idem/store-memory';
import { describe, expect, it } from 'vitest';
import { PROBLEM_TYPES, withIdempotency } from '../src/index.js';

// The library's own answers (README "Status codes of its own") are RFC 9457
// `application/problem+json` with their status and stable type, and never cached by
// intermediaries (`Cache-Control: no-store`, `problemResponse`): a shared cache that kept a 409
// or a 422 would answer it to a later retry of the key. Mutation audit (muthttp): the
// no-store field could be dropped with every other test passing.

function post(key: string | undefined, body = '{"a":1}', headers: Record<string, string> = {}) {
  return new Request('http://api.test/items', {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      ...(key === undefined ? {} : { 'idempotency-key': key }),
      ...headers,
    },
    body,
  });
}

describe("the library's own problems", () => {
  it('carry their status, type, the problem media type and Cache-Control: no-store', async () => {
    let release: () => void = () => {};
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    const handler = withIdempotency(
      async (request) => {
        if (request.headers.get('x-hold') === '1') await held;
        return Response.json({ ok: true }, { status: 201 });
      },
      { store: createMemoryStore(), scope: 'global', maxBodyBytes: 64 },
    );
    expect((await handler(post('done'))).status).toBe(201);
    const running = handler(post('busy', '{"a":1}', { 'x-hold': '1' }));
    await new Promise((resolve) => setTimeout(resolve, 50));
    const cases: [Request, number, string][] = [
      [post(undefined), 400, PROBLEM_TYPES.missingKey],
      [post('a,b'), 400, PROBLEM_TYPES.invalidKey],
      [post('big', JSON.stringify({ a: 'x'.repeat(100) })), 413, PROBLEM_TYPES.bodyTooLarge],
      [post('done', '{"a":2}'), 422, PROBLEM_TYPES.keyReused],
      [post('busy', '{"a":1}', { 'x-hold': '1' }), 409, PROBLEM_TYPES.inProgress],
    ];
    for (const [request, status, type] of cases) {
      const response = await handler(request);
      expect(response.status, type).toBe(status);
      expect(response.headers.get('content-type'), type).toBe('application/problem+json');
      expect(response.headers.get('cache-control'), type).toBe('no-store');
      const problem = (await response.json()) as { type: string; status: number };
      expect(problem, type).toMatchObject({ type, status });
    }
    release();
    expect((await running).status).toBe(201);
  });
});
