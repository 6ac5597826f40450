import { setTimeout as sleep } from 'node:timers/promises';
import type { APIGatewayProxyEventV2, Context } from 'aws-lambda';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  type ContextWithIdempotency,
  functionScope,
  InProgressError,
  idempotency,
  MismatchError,
  makeIdempotent,
} from '../src/index.js';
import { type Env, fakeContext, openEnv, storeKinds } from './lambda-env.js';
import { describeMiddyEach } from './middy-versions.js';

interface Order {
  orderId: string;
  amount: number;
  traceId?: string;
}

const orderEvent = (order: Order) =>
  ({
    version: '2.0',
    routeKey: 'POST /orders',
    rawPath: '/orders',
    rawQueryString: '',
    headers: { 'content-type': 'application/json' },
    isBase64Encoded: false,
    requestContext: { requestId: crypto.randomUUID() },
    body: JSON.stringify(order),
  }) as unknown as APIGatewayProxyEventV2;

const orderOf = (event: APIGatewayProxyEventV2): Order => JSON.parse(event.body ?? '{}');

describe.each(storeKinds)('makeIdempotent on %s', (kind) => {
  let env: Env;
  beforeEach(async () => {
    env = await openEnv(kind);
  });
  afterEach(async () => {
    await env.close();
  });

  const options = () => ({
    store: env.store,
    scope: functionScope,
    key: (event: APIGatewayProxyEventV2) => orderOf(event).orderId,
    payload: (event: APIGatewayProxyEventV2) => {
      const { traceId: _ignored, ...rest } = orderOf(event);
      return rest;
    },
  });

  it('runs once per key, replays the return value, and ignores what the payload leaves out', async () => {
    let runs = 0;
    const handler = makeIdempotent(async (event: APIGatewayProxyEventV2, _ctx: Context, idem) => {
      runs += 1;
      const order = orderOf(event);
      await env.ledger.write(order.orderId, idem.fence, 'charged');
      return {
        statusCode: 201,
        body: JSON.stringify({ charged: order.amount, fence: idem.fence }),
      };
    }, options());
    const first = await handler(
      orderEvent({ orderId: 'o-1', amount: 5, traceId: 'a' }),
      fakeContext(10_000),
    );
    const retry = await handler(
      orderEvent({ orderId: 'o-1', amount: 5, traceId: 'b' }),
      fakeContext(10_000),
    );
    expect(retry).toEqual(first);
    expect(runs).toBe(1);
    await expect(
      handler(orderEvent({ orderId: 'o-1', amount: 6 }), fakeContext(10_000)),
    ).rejects.toBeInstanceOf(MismatchError);
    expect((await env.ledger.entries()).size).toBe(1);
  });

  it('a duplicate in progress raises InProgressError (Lambda retries it); a failure releases the key', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    let started!: () => void;
    const running = new Promise<void>((r) => {
      started = r;
    });
    let runs = 0;
    const handler = makeIdempotent(async (event: APIGatewayProxyEventV2) => {
      runs += 1;
      if (orderOf(event).amount < 0) throw new Error('declined');
      started();
      await gate;
      return { ok: true };
    }, options());
    const first = handler(orderEvent({ orderId: 'o-2', amount: 1 }), fakeContext(10_000));
    await running;
    const dup = await handler(orderEvent({ orderId: 'o-2', amount: 1 }), fakeContext(10_000)).catch(
      (e: unknown) => e,
    );
    expect(dup).toBeInstanceOf(InProgressError);
    expect((dup as InProgressError).code).toBe('IN_PROGRESS');
    release();
    expect(await first).toEqual({ ok: true });

    await expect(
      handler(orderEvent({ orderId: 'o-3', amount: -1 }), fakeContext(10_000)),
    ).rejects.toThrow('declined');
    await expect(
      handler(orderEvent({ orderId: 'o-3', amount: -1 }), fakeContext(10_000)),
    ).rejects.toThrow('declined');
    expect(runs).toBe(3); // o-2 once, o-3 twice: a failure is not recorded
  });

  it('caps the lease by the remaining time: a timed-out invocation frees its key at its deadline', async () => {
    // leaseMs 60 s, but the invocation has 1.2 s: the retry takes over right after that, with
    // a higher fence, and the frozen invocation's late write is refused by the ledger.
    let runs = 0;
    const handler = makeIdempotent(
      async (event: APIGatewayProxyEventV2, _ctx: Context, idem) => {
        runs += 1;
        started();
        if (runs === 1) await sleep(4_000); // past its deadline: Lambda would have stopped it
        return env.ledger.write(orderOf(event).orderId, idem.fence, `run ${runs}`);
      },
      { ...options(), leaseMs: 60_000 },
    );
    let started!: () => void;
    const running = new Promise<void>((r) => {
      started = r;
    });
    const timedOut = handler(orderEvent({ orderId: 'o-4', amount: 1 }), fakeContext(1_200));
    await running;
    await expect(
      handler(orderEvent({ orderId: 'o-4', amount: 1 }), fakeContext(10_000)),
    ).rejects.toBeInstanceOf(InProgressError);
    // Retried as Lambda would, until the first invocation's deadline has passed.
    let retried: unknown;
    for (let i = 0; i < 40; i += 1) {
      retried = await handler(orderEvent({ orderId: 'o-4', amount: 1 }), fakeContext(10_000)).catch(
        (e: unknown) => e,
      );
      if (!(retried instanceof InProgressError)) break;
      await sleep(100);
    }
    expect(retried).toBe('written');
    // The zombie wakes up and writes with its stale fence: refused.
    await timedOut.catch(() => {});
    const entries = await env.ledger.entries();
    expect(entries.get('o-4')?.fence).toBe(2);
    expect(await env.ledger.stats()).toMatchObject({ written: 1, stale: 1, replaced: 0 });
  });
});

describeMiddyEach(storeKinds, 'Middy middleware on %s', (kind, { middy }) => {
  let env: Env;
  beforeEach(async () => {
    env = await openEnv(kind);
  });
  afterEach(async () => {
    await env.close();
  });

  it('short-circuits a replay before the handler, records the response after it', async () => {
    let runs = 0;
    const handler = middy(async (event: APIGatewayProxyEventV2, context: Context) => {
      runs += 1;
      const { fence } = (context as ContextWithIdempotency<Context>).idempotency ?? { fence: 0 };
      await env.ledger.write(orderOf(event).orderId, fence, 'charged');
      if (orderOf(event).amount < 0) throw new Error('declined');
      return { statusCode: 201, body: `fence ${fence}` };
    }).use(
      idempotency({
        scope: functionScope,
        store: env.store,
        key: (event: APIGatewayProxyEventV2) => orderOf(event).orderId,
      }),
    );
    const first = await handler(orderEvent({ orderId: 'm-1', amount: 3 }), fakeContext(10_000));
    expect(first).toEqual({ statusCode: 201, body: 'fence 1' });
    expect(await handler(orderEvent({ orderId: 'm-1', amount: 3 }), fakeContext(10_000))).toEqual(
      first,
    );
    expect(runs).toBe(1);
    await expect(
      handler(orderEvent({ orderId: 'm-2', amount: -1 }), fakeContext(10_000)),
    ).rejects.toThrow('declined');
    // Released: the retry runs again, with the next fence.
    await expect(
      handler(orderEvent({ orderId: 'm-2', amount: -1 }), fakeContext(10_000)),
    ).rejects.toThrow('declined');
    expect(runs).toBe(3);
    expect((await env.ledger.entries()).get('m-2')?.fence).toBe(2);
  });
});
