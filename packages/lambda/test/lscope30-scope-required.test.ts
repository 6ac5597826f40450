// lscope30: makeIdempotent and idempotency() require `scope`. Their keys are often chosen by the
// caller (an orderId in an API Gateway request): the former default, the function, let two
// callers sending the same orderId share one record, the second getting the first's response.
// `functionScope` keeps the former default's storage keys for keys no caller chooses.
import { createIdempotency, deriveStorageKey, InvalidInputError } from '@idem/core';
import type { APIGatewayProxyEvent, Context } from 'aws-lambda';
import { describe, expect, it } from 'vitest';
import {
  type ContextWithIdempotency,
  functionScope,
  type IdempotencyInfo,
  idempotency,
  makeIdempotent,
  makeSqsBatchHandler,
} from '../src/index.js';
import { fakeContext, sqsRecord, useEnv } from './lambda-env.js';
import { middies } from './middy-versions.js';

/** An API Gateway (REST) event of `principalId` ordering `orderId`. */
const apiEvent = (principalId: string, orderId: string, note: string): APIGatewayProxyEvent =>
  ({
    body: JSON.stringify({ orderId, note }),
    requestContext: { authorizer: { principalId } },
  }) as unknown as APIGatewayProxyEvent;

const orderIdOf = (event: APIGatewayProxyEvent): string => JSON.parse(event.body ?? '{}').orderId;
const noteOf = (event: APIGatewayProxyEvent): string => JSON.parse(event.body ?? '{}').note;
/** The caller's principal, as the authorizer names it: the README's scope. */
const byPrincipal = (event: APIGatewayProxyEvent) => [
  'orders',
  event.requestContext.authorizer?.principalId as string,
];

/** What `fn` threw (undefined when it returned). */
function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    return error;
  }
  return undefined;
}

/** An InvalidInputError that says what to pass: a principal scope, or functionScope. */
function expectScopeRequired(error: unknown): void {
  expect(error).toBeInstanceOf(InvalidInputError);
  expect((error as Error).message).toMatch(/requires a scope/);
  expect((error as Error).message).toMatch(/principal/);
  expect((error as Error).message).toMatch(/functionScope/);
}

describe('lscope30: scope is required by makeIdempotent and idempotency()', () => {
  const env = useEnv('redis');

  it('makeIdempotent without scope (absent, undefined, null) throws InvalidInputError at creation', () => {
    const handler = async () => 'ran';
    const key = (event: APIGatewayProxyEvent) => orderIdOf(event);
    for (const options of [
      { store: env().store, key },
      { store: env().store, key, scope: undefined },
      { store: env().store, key, scope: null },
    ])
      expectScopeRequired(thrown(() => makeIdempotent(handler, options as never)));
  });

  it.each(middies)(
    'Middy $major: idempotency() without scope throws InvalidInputError at creation',
    ({ middy }) => {
      const ran: string[] = [];
      const error = thrown(() =>
        middy(async () => ran.push('handler')).use(
          idempotency({ store: env().store, key: (event: { id: string }) => event.id } as never),
        ),
      );
      expectScopeRequired(error);
      expect(ran).toEqual([]);
    },
  );

  it('the batch handlers keep their default scope (the source ids no caller chooses)', async () => {
    const ran: string[] = [];
    const handler = makeSqsBatchHandler(
      async (record: { body: string }) => {
        ran.push(record.body);
      },
      { store: env().store },
    );
    const event = { Records: [sqsRecord('one')] };
    expect(await handler(event, fakeContext(10_000))).toEqual({ batchItemFailures: [] });
    expect(await handler(event, fakeContext(10_000))).toEqual({ batchItemFailures: [] });
    expect(ran).toEqual(['one']);
  });

  it('functionScope gives the former default storage key: an event recorded before the upgrade replays', async () => {
    const context = fakeContext(10_000, 'orders-fn');
    const event = apiEvent('alice', 'order-7', 'first');
    // The former default: scope ['lambda', context.functionName], the key as it is.
    const former = deriveStorageKey(['lambda', 'orders-fn'], 'order-7');
    // Recorded as the former code did (its engine call: that scope, that key, no payload).
    const engine = createIdempotency<unknown>({ store: env().store });
    await engine.execute({ key: 'order-7', scope: ['lambda', 'orders-fn'], fingerprint: '' }, () =>
      Promise.resolve('recorded before the upgrade'),
    );
    const seen: IdempotencyInfo[] = [];
    const handler = makeIdempotent(
      async (_event: APIGatewayProxyEvent, _context: Context, info) => {
        seen.push(info);
        return 'ran again';
      },
      { store: env().store, scope: functionScope, key: orderIdOf },
    );
    expect(await handler(event, context)).toBe('recorded before the upgrade');
    expect(seen).toEqual([]);
    // A new key runs, under the same derivation.
    expect(await handler(apiEvent('alice', 'order-8', 'second'), context)).toBe('ran again');
    expect(seen.map((info) => info.storageKey)).toEqual([
      deriveStorageKey(['lambda', 'orders-fn'], 'order-8'),
    ]);
    expect(functionScope(event, context)).toEqual(['lambda', 'orders-fn']);
    expect(former).not.toBe(deriveStorageKey(['lambda', 'other-fn'], 'order-7'));
  });

  it('Middy: functionScope replays what the former default recorded', async () => {
    for (const { middy, major } of middies) {
      const context = fakeContext(10_000, `orders-fn-${major}`);
      const engine = createIdempotency<unknown>({ store: env().store });
      await engine.execute(
        { key: 'order-7', scope: ['lambda', context.functionName], fingerprint: '' },
        () => Promise.resolve({ statusCode: 201, body: 'recorded' }),
      );
      const ran: string[] = [];
      const handler = middy(async (_event: APIGatewayProxyEvent, ctx: Context) => {
        ran.push((ctx as ContextWithIdempotency<Context>).idempotency?.storageKey ?? '');
        return { statusCode: 201, body: 'ran again' };
      }).use(idempotency({ store: env().store, scope: functionScope, key: orderIdOf }));
      expect(await handler(apiEvent('alice', 'order-7', 'x'), context)).toEqual({
        statusCode: 201,
        body: 'recorded',
      });
      expect(ran).toEqual([]);
    }
  });

  it('two callers, the same orderId, different principals: both run, each replays its own', async () => {
    const ran: string[] = [];
    const handler = makeIdempotent(
      async (event: APIGatewayProxyEvent) => {
        ran.push(noteOf(event));
        return `charged for ${noteOf(event)}`;
      },
      { store: env().store, scope: byPrincipal, key: orderIdOf },
    );
    const context = fakeContext(10_000);
    const answers = [
      await handler(apiEvent('alice', 'order-1', 'alice'), context),
      await handler(apiEvent('bob', 'order-1', 'bob'), context),
      await handler(apiEvent('alice', 'order-1', 'alice retry'), context),
      await handler(apiEvent('bob', 'order-1', 'bob retry'), context),
    ];
    expect({ answers, ran }).toEqual({
      answers: ['charged for alice', 'charged for bob', 'charged for alice', 'charged for bob'],
      ran: ['alice', 'bob'],
    });
  });

  it.each(middies)(
    'Middy $major: two principals with the same orderId both run',
    async ({ middy }) => {
      const ran: string[] = [];
      const handler = middy(async (event: APIGatewayProxyEvent) => {
        ran.push(noteOf(event));
        return `charged for ${noteOf(event)}`;
      }).use(idempotency({ store: env().store, scope: byPrincipal, key: orderIdOf }));
      const context = fakeContext(10_000);
      const answers = [
        await handler(apiEvent('alice', 'order-1', 'alice'), context),
        await handler(apiEvent('bob', 'order-1', 'bob'), context),
        await handler(apiEvent('bob', 'order-1', 'bob retry'), context),
      ];
      expect({ answers, ran }).toEqual({
        answers: ['charged for alice', 'charged for bob', 'charged for bob'],
        ran: ['alice', 'bob'],
      });
    },
  );

  it('an event whose principal is missing is refused, never shared (the scope function names nothing)', async () => {
    const ran: string[] = [];
    const handler = makeIdempotent(
      async (event: APIGatewayProxyEvent) => {
        ran.push(noteOf(event));
        return 'ran';
      },
      {
        store: env().store,
        scope: (event: APIGatewayProxyEvent) => ({
          principal: event.requestContext.authorizer?.principalId as string,
        }),
        key: orderIdOf,
      },
    );
    const anonymous = {
      body: JSON.stringify({ orderId: 'order-1', note: 'anon' }),
      requestContext: {},
    };
    await expect(
      handler(anonymous as unknown as APIGatewayProxyEvent, fakeContext(10_000)),
    ).rejects.toBeInstanceOf(InvalidInputError);
    expect(ran).toEqual([]);
  });
});
