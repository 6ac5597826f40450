import { createMemoryStore } from '@idem/store-memory';
import { describe, expect, it } from 'vitest';
import { createIdempotencyHandler, PROBLEM_TYPES } from '../src/index.js';

// rev10b: a request target the URL parser refuses is the client's error: begin() answers a
// 400 problem (never throws a TypeError, a 500), before the scope hook and the body.

describe('begin() with a request target the URL parser refuses', () => {
  it('answers 400 invalid-target; neither the scope hook nor the body reader runs', async () => {
    let scoped = 0;
    let read = 0;
    const handler = createIdempotencyHandler({
      store: createMemoryStore(),
      scope: () => {
        scoped++;
        return { principal: 'p' };
      },
    });
    for (const url of ['http://a:99999/x', 'http://a%zz/x', 'https://user@:80/x']) {
      const decision = await handler.begin({
        native: new Request('http://localhost/'),
        method: 'POST',
        url,
        header: (name) => (name === 'idempotency-key' ? 'k1' : undefined),
        readBody: async () => {
          read++;
          return { kind: 'none' };
        },
      });
      expect(decision.action, url).toBe('respond');
      if (decision.action !== 'respond') continue;
      expect(decision.response.status, url).toBe(400);
      expect(decision.response.headers.get('content-type'), url).toBe('application/problem+json');
      expect(await decision.response.json(), url).toMatchObject({
        type: PROBLEM_TYPES.invalidTarget,
        status: 400,
      });
    }
    expect({ scoped, read }).toEqual({ scoped: 0, read: 0 });
  });
});
