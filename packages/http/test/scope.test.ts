import { InvalidInputError, isIdemError } from '@idem/core';
import { spyStore } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { describe, expect, it } from 'vitest';
import {
  createIdempotencyHandler,
  type HttpIdempotencyOptions,
  PROBLEM_TYPES,
  REPLAYED_HEADER,
  type ScopeHint,
  withIdempotency,
} from '../src/index.js';

function post(key: string, user?: string): Request {
  return new Request('http://api.test/charges', {
    method: 'POST',
    headers: {
      'idempotency-key': key,
      'content-type': 'application/json',
      ...(user === undefined ? {} : { 'x-user': user }),
    },
    body: '{"amount":1}',
  });
}

/** A handler that answers which run it is. */
function counting() {
  let runs = 0;
  return {
    runs: () => runs,
    next: async () => Response.json({ run: ++runs }, { status: 201 }),
  };
}

describe('scope is required', () => {
  it('refuses to create a handler without scope, naming the option', () => {
    const create = () =>
      // @ts-expect-error scope is required
      createIdempotencyHandler({ store: createMemoryStore() });
    expect(create).toThrow(InvalidInputError);
    expect(create).toThrow(/scope/);
    try {
      create();
    } catch (error) {
      expect(isIdemError(error, 'INVALID_INPUT')).toBe(true);
    }
    const withoutScope = { store: createMemoryStore() } as unknown as HttpIdempotencyOptions;
    expect(() => withIdempotency(async () => new Response('ok'), withoutScope)).toThrow(/scope/);
  });

  it('refuses a scope that is neither a hook nor "global"', () => {
    for (const scope of ['tenant', null, 42, {}]) {
      expect(() =>
        createIdempotencyHandler({
          store: createMemoryStore(),
          scope: scope as unknown as 'global',
        }),
      ).toThrow(/scope/);
    }
  });

  it('shares one key space between every caller only when scope is "global"', async () => {
    const app = counting();
    const handler = createIdempotencyHandler({ store: createMemoryStore(), scope: 'global' });
    const a = await handler.handle(post('k', 'alice'), app.next);
    expect(await a.json()).toEqual({ run: 1 });
    const b = await handler.handle(post('k', 'bob'), app.next);
    expect(b.headers.get(REPLAYED_HEADER)).toBe('true');
    expect(app.runs()).toBe(1);
  });

  it('keeps two principals apart, with a sync or an async hook', async () => {
    for (const scope of [
      (request: Request): ScopeHint => ({ principal: String(request.headers.get('x-user')) }),
      async (request: Request): Promise<ScopeHint> => ({
        principal: String(request.headers.get('x-user')),
      }),
    ]) {
      const app = counting();
      const handler = createIdempotencyHandler({ store: createMemoryStore(), scope });
      await (await handler.handle(post('k', 'alice'), app.next)).text();
      const bob = await handler.handle(post('k', 'bob'), app.next);
      expect(await bob.json()).toEqual({ run: 2 });
      const aliceAgain = await handler.handle(post('k', 'alice'), app.next);
      expect(aliceAgain.headers.get(REPLAYED_HEADER)).toBe('true');
      expect(app.runs()).toBe(2);
    }
  });

  const NO_PRINCIPAL: [string, HttpIdempotencyOptions['scope']][] = [
    ['undefined', () => undefined as unknown as ScopeHint],
    ['an empty hint', () => ({}) as ScopeHint],
    [
      'an undefined principal',
      (request) => ({ principal: request.headers.get('x-none') ?? undefined }) as ScopeHint,
    ],
    [
      'a null principal',
      (request) => ({ principal: request.headers.get('x-none') }) as unknown as ScopeHint,
    ],
    [
      'an empty string principal',
      (request) => ({ principal: request.headers.get('x-none') ?? '' }),
    ],
    [
      'an async undefined principal',
      async () => ({ principal: undefined }) as unknown as ScopeHint,
    ],
    // What `{ tenant: user?.tenantId }` gives every anonymous caller: canonical JSON drops the
    // undefined member, so each would be the principal {} (one shared key space).
    [
      'an object principal without defined members',
      (request) => ({ principal: { tenant: request.headers.get('x-none') ?? undefined } }),
    ],
    ['an empty array principal', () => ({ principal: [] })],
  ];

  it.each(NO_PRINCIPAL)(
    'answers a 500 problem and warns when the hook returns %s, running nothing',
    async (_name, scope) => {
      const warnings: string[] = [];
      const spied = spyStore(createMemoryStore());
      const app = counting();
      const handler = createIdempotencyHandler({
        store: spied.store,
        scope,
        onWarning: (message) => warnings.push(message),
      });
      for (const user of ['alice', 'bob']) {
        const response = await handler.handle(post('k', user), app.next);
        expect(response.status).toBe(500);
        expect(response.headers.get('content-type')).toMatch(/^application\/problem\+json/);
        expect(await response.json()).toMatchObject({
          type: PROBLEM_TYPES.noPrincipal,
          status: 500,
        });
      }
      expect(app.runs()).toBe(0);
      expect(spied.calls.acquire).toBe(0);
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toMatch(/principal/);
    },
  );
});
