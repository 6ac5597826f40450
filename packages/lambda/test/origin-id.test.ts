import type { Context } from 'aws-lambda';
import { afterEach, beforeEach, expect, it } from 'vitest';
import {
  type ContextWithIdempotency,
  functionScope,
  idempotency,
  makeIdempotent,
} from '../src/index.js';
import { type Env, fakeContext, openEnv, storeKinds } from './lambda-env.js';
import { describeMiddyEach } from './middy-versions.js';

type Ev = { id: string };

describeMiddyEach(storeKinds, 'originId on %s: one id per logical request', (kind, { middy }) => {
  let env: Env;
  beforeEach(async () => {
    env = await openEnv(kind);
  });
  afterEach(async () => {
    await env.close();
  });

  it('makeIdempotent: an invocation that failed and its retry get the same originId; another key another', async () => {
    const seen: string[] = [];
    let fail = true;
    const handler = makeIdempotent(
      async (_event: Ev, _ctx: Context, idem) => {
        seen.push(idem.originId);
        if (fail) {
          fail = false;
          throw new Error('downstream timeout');
        }
        return { id: idem.originId };
      },
      { scope: functionScope, store: env.store, key: (event: Ev) => event.id },
    );
    await expect(handler({ id: 'order-1' }, fakeContext(30_000))).rejects.toThrow(
      'downstream timeout',
    );
    const done = await handler({ id: 'order-1' }, fakeContext(30_000));
    const other = await handler({ id: 'order-2' }, fakeContext(30_000));
    expect(seen[0]).toMatch(/^[0-9a-f]{32}$/);
    expect(seen[1]).toBe(seen[0]);
    expect(done).toEqual({ id: seen[0] });
    expect(other.id).toMatch(/^[0-9a-f]{32}$/);
    expect(other.id).not.toBe(seen[0]);
  });

  it('Middy: context.idempotency.originId, the same for the retry of a failed invocation', async () => {
    const seen: string[] = [];
    let fail = true;
    const handler = middy(async (_event: Ev, context: ContextWithIdempotency<Context>) => {
      const id = context.idempotency?.originId ?? 'none';
      seen.push(id);
      if (fail) {
        fail = false;
        throw new Error('downstream timeout');
      }
      return { id };
    }).use(idempotency({ scope: functionScope, store: env.store, key: (event: Ev) => event.id }));
    await expect(handler({ id: 'm-1' }, fakeContext(30_000))).rejects.toThrow('downstream timeout');
    const done = await handler({ id: 'm-1' }, fakeContext(30_000));
    expect(seen[0]).toMatch(/^[0-9a-f]{32}$/);
    expect(seen[1]).toBe(seen[0]);
    expect(done).toEqual({ id: seen[0] });
  });
});
