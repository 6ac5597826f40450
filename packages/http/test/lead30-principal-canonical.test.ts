/**
 * The scope hook's principal is checked as canonical JSON writes it, the value the storage key
 * is derived from: read by its own members, an invalid `Date` (written `null`) or a value object
 * whose `toJSON` gives `null` (beside an own constant member) named somebody, and every such caller shared one principal (one
 * key space: the second caller got the first's replay). A `Date` (no own members) stays refused,
 * as nest13-review pins. The storage keys of accepted principals are those of before.
 */
import { deriveStorageKey, type IdempotencyStore } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import { describe, expect, it } from 'vitest';
import { createIdempotencyHandler, PROBLEM_TYPES, type ScopeHint } from '../src/index.js';

function post(key: string, user: string): Request {
  return new Request('http://api.test/charges', {
    method: 'POST',
    headers: { 'idempotency-key': key, 'content-type': 'application/json', 'x-user': user },
    body: '{"amount":1}',
  });
}

/** A store that remembers the storage key of every acquisition. */
function keyedStore(): { store: IdempotencyStore; keys: string[] } {
  const inner = createMemoryStore();
  const keys: string[] = [];
  return {
    keys,
    store: {
      ...inner,
      capabilities: inner.capabilities,
      acquire: (input) => {
        keys.push(input.key);
        return inner.acquire(input);
      },
      complete: (input) => inner.complete(input),
      release: (input) => inner.release(input),
      extend: (input) => inner.extend(input),
      get: (key) => inner.get(key),
    },
  };
}

/** A value object: an own constant member beside its id, written as the id alone. */
class TenantId {
  readonly kind = 'tenant';
  constructor(private readonly id: string | undefined) {}
  toJSON(): string | null {
    return this.id ?? null;
  }
}

/** `depth` objects nested in one another, the innermost `{}`. */
function nestedEmpty(depth: number): Record<string, unknown> {
  let value: Record<string, unknown> = {};
  for (let i = 0; i < depth; i++) value = { inner: value };
  return value;
}

describe('a principal is checked as canonical JSON writes it', () => {
  const NAMES_NOBODY: [string, (request: Request) => ScopeHint][] = [
    // `{ since: new Date(user.createdAt) }` without a user: an invalid Date is written null.
    [
      'an invalid Date member',
      (request) =>
        ({
          principal: { since: new Date(request.headers.get('x-none') ?? Number.NaN) },
        }) as unknown as ScopeHint,
    ],
    [
      'a value object whose toJSON gives null',
      (request) =>
        ({
          principal: { tenant: new TenantId(request.headers.get('x-none') ?? undefined) },
        }) as unknown as ScopeHint,
    ],
    ['an object nested 40 levels around {}', () => ({ principal: nestedEmpty(40) }) as ScopeHint],
    ['a valid Date', () => ({ principal: new Date(0) }) as unknown as ScopeHint],
  ];

  it.each(NAMES_NOBODY)('refuses %s: 500 problem, nothing run', async (_name, scope) => {
    let runs = 0;
    const handler = createIdempotencyHandler({
      store: createMemoryStore(),
      scope,
      onWarning: () => {},
    });
    for (const user of ['alice', 'bob']) {
      const response = await handler.handle(post('k', user), async () =>
        Response.json({ run: ++runs }, { status: 201 }),
      );
      expect(response.status).toBe(500);
      expect(await response.json()).toMatchObject({ type: PROBLEM_TYPES.noPrincipal });
    }
    expect(runs).toBe(0);
  });

  it('derives the storage keys of accepted principals as before', async () => {
    const principals: unknown[] = [
      'alice',
      42,
      { tenant: 'a', user: 'b', gone: undefined },
      { n: -0, big: 1e21, tiny: 5e-324, lone: '\ud800', ['__proto__']: 'p' },
      [['nested', { deep: [1, 'x'] }]],
      { tenant: new TenantId('acme') },
    ];
    for (const principal of principals) {
      const { store, keys } = keyedStore();
      const handler = createIdempotencyHandler({
        store,
        scope: () => ({ principal }) as unknown as ScopeHint,
      });
      const response = await handler.handle(post('k', 'x'), async () =>
        Response.json({}, { status: 201 }),
      );
      expect(response.status).toBe(201);
      expect(keys).toEqual([
        deriveStorageKey(['idem/http/v1', principal as never, 'POST /charges'], 'k'),
      ]);
    }
  });
});
