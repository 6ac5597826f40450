import { OutcomeNotRecordedError } from '@idem/core';
import { expect, it } from 'vitest';
import { functionScope, idempotency, idempotentTimeoutResponse } from '../src/index.js';
import { fakeContext, settle, sleep, twoMiddlewares, useEnv } from './lambda-env.js';
import { describeMiddy } from './middy-versions.js';

// lambda21: idempotency() watches Middy's call of the handler (`lambdaHandler(request.event,
// request.context, ...)`: a read of `event` right followed by one of `context`); a write of
// request.response before that call is a `before` hook's (a default response), never the
// handler's return. These tests attack that watch: it must never take a real return for a
// `before` write (a second run), whatever later middlewares do to the request.

type Ev = { id: string };
// biome-ignore lint/suspicious/noExplicitAny: a Middy request poked at as any middleware would
type Req = any;

/** A later middleware whose `before` writes a default response (the handler's replaces it). */
const defaultResponse = {
  before: async (request: Req) => {
    request.response = { headers: {} };
  },
};

describeMiddy('lambda21: the handler-call watch of idempotency() (redis)', ({ middy }) => {
  const env = useEnv('redis');
  const idem = () =>
    idempotency({ scope: functionScope, store: env().store, key: (e: Ev) => e.id });

  it('a later `before` writes a default response, another answers early (a value or undefined): released (nothing ran), the retry runs', async () => {
    const answers: Array<(request: Req) => unknown> = [
      async () => 'warm',
      async (request) => {
        request.earlyResponse = undefined;
      },
    ];
    for (const [k, answer] of answers.entries()) {
      let runs = 0;
      let warm = true;
      const handler = middy(async (_e: Ev) => {
        runs += 1;
        return 'ran';
      })
        .use(idem())
        .use(defaultResponse)
        .use({ before: async (request: Req) => (warm ? answer(request) : undefined) });
      const id = `default-early-${k}`;
      expect(await handler({ id }, fakeContext(10_000))).toBe(k === 0 ? 'warm' : undefined);
      warm = false;
      expect(await handler({ id }, fakeContext(10_000))).toBe('ran');
      expect(await handler({ id }, fakeContext(10_000))).toBe('ran');
      expect(runs).toBe(1);
    }
  });

  it('a later `before` writes a default response, the handler returns, a later `after` throws: a marker, no second run', async () => {
    let runs = 0;
    const handler = middy(async (_e: Ev) => {
      runs += 1;
      return 'charged';
    })
      .use(idem())
      .use({
        after: async () => {
          throw new Error('response invalid');
        },
      })
      .use(defaultResponse);
    await expect(handler({ id: 'default-after' }, fakeContext(10_000))).rejects.toThrow(
      'response invalid',
    );
    const retry = await settle(handler({ id: 'default-after' }, fakeContext(10_000)));
    expect(retry.error).toBeInstanceOf(OutcomeNotRecordedError);
    expect(runs).toBe(1);
  });

  it('a later `before` replaces the watch of request.event / request.context: taken as called, no second run', async () => {
    const replacers: Array<(request: Req) => void> = [
      (request) => {
        Object.defineProperty(request, 'event', {
          value: request.event,
          writable: true,
          configurable: true,
          enumerable: true,
        });
      },
      (request) => {
        const context = request.context;
        delete request.context;
        request.context = context;
      },
      (request) => {
        // its own accessor over ours (a tracing middleware): Middy's reads go through its getter
        const own = Object.getOwnPropertyDescriptor(request, 'context') as PropertyDescriptor;
        let stored = own.value;
        Object.defineProperty(request, 'context', {
          configurable: true,
          enumerable: true,
          get() {
            return own.get ? own.get.call(this) : stored;
          },
          set(value) {
            if (own.set) own.set.call(this, value);
            else stored = value;
          },
        });
      },
    ];
    for (const [k, replace] of replacers.entries()) {
      let runs = 0;
      const handler = middy(async (_e: Ev) => {
        runs += 1;
        return 'charged';
      })
        .use(idem())
        .use({
          before: async (request: Req) => {
            replace(request);
          },
          after: async () => {
            throw new Error('response invalid');
          },
        });
      const id = `replaced-${k}`;
      await expect(handler({ id }, fakeContext(10_000))).rejects.toThrow('response invalid');
      const retry = await settle(handler({ id }, fakeContext(10_000)));
      expect(retry.error).toBeInstanceOf(OutcomeNotRecordedError);
      expect(runs).toBe(1);
    }
  });

  it('a plugin accessor on request.context that reads request.error: the call is still seen, no second run', async () => {
    // (requestStart runs before idempotency()'s `before`: the watch chains to its accessor)
    const plugin = {
      requestStart: ((request: Req) => {
        let context = request.context;
        Object.defineProperty(request, 'context', {
          configurable: true,
          enumerable: true,
          get() {
            if (request.error !== undefined) return context; // (a tracer noting errors)
            return context;
          },
          set(value) {
            context = value;
          },
        });
      }) as unknown as () => void,
    };
    let runs = 0;
    const handler = middy(async (_e: Ev) => {
      runs += 1;
      return 'charged';
    }, plugin)
      .use(idem())
      .use({
        after: async () => {
          throw new Error('response invalid');
        },
      });
    await expect(handler({ id: 'plugin-ctx' }, fakeContext(10_000))).rejects.toThrow(
      'response invalid',
    );
    const retry = await settle(handler({ id: 'plugin-ctx' }, fakeContext(10_000)));
    expect(retry.error).toBeInstanceOf(OutcomeNotRecordedError);
    expect(runs).toBe(1);
  });

  it('a later `before` reading request.event alone, then writing a default response; the handler throws: released', async () => {
    let runs = 0;
    const handler = middy(async (e: Ev) => {
      runs += 1;
      if (runs === 1) throw new Error('transient');
      return { statusCode: 200, id: e.id };
    })
      .use(idem())
      .use({
        before: async (request: Req) => {
          if (typeof request.event.id !== 'string') throw new Error('400');
          request.response = { headers: {} };
        },
      });
    await expect(handler({ id: 'event-read' }, fakeContext(10_000))).rejects.toThrow('transient');
    expect(await handler({ id: 'event-read' }, fakeContext(10_000))).toEqual({
      statusCode: 200,
      id: 'event-read',
    });
    expect(runs).toBe(2);
  });

  it('held (the cost left): a later `before` reading event and context, then writing a default response; the handler throws: a marker', async () => {
    // Such reads look like Middy's call of the handler: the write after them is taken as a
    // return (the safe side), as before lambda21. idem.last forgets it (its `before` runs last).
    let runs = 0;
    const handler = middy(async (_e: Ev) => {
      runs += 1;
      throw new Error('transient');
    })
      .use(idem())
      .use({
        before: async (request: Req) => {
          const { event, context } = request;
          if (!event || !context) throw new Error('400');
          request.response = { headers: {} };
        },
      });
    await expect(handler({ id: 'both-read' }, fakeContext(10_000))).rejects.toThrow('transient');
    const retry = await settle(handler({ id: 'both-read' }, fakeContext(10_000)));
    expect(retry.error).toBeInstanceOf(OutcomeNotRecordedError);
    expect(runs).toBe(1);
  });

  it('two idempotency() and a later `before` writing a default response: a throw releases both keys, a return records both', async () => {
    let runs = 0;
    let fail = true;
    const [outer, inner] = twoMiddlewares(env().store);
    const handler = middy(async (_e: Ev) => {
      runs += 1;
      if (fail) throw new Error('transient');
      return 'ok';
    })
      .use(outer)
      .use(inner)
      .use(defaultResponse);
    await expect(handler({ id: 'two' }, fakeContext(10_000))).rejects.toThrow('transient');
    fail = false;
    expect(await handler({ id: 'two' }, fakeContext(10_000))).toBe('ok');
    expect(await handler({ id: 'two' }, fakeContext(10_000))).toBe('ok');
    expect(runs).toBe(2);
  });

  it('two idempotency() and a later `before` reading request.context, then writing a default response; the handler throws: both released', async () => {
    // (the inner idempotency()'s own reads of event and context must not look like the call)
    let runs = 0;
    const handler = middy(async (_e: Ev) => {
      runs += 1;
      if (runs === 1) throw new Error('transient');
      return 'ok';
    })
      .use(
        idempotency({ scope: functionScope, store: env().store, key: (e: Ev) => `outer-${e.id}` }),
      )
      .use(
        idempotency({ scope: functionScope, store: env().store, key: (e: Ev) => `inner-${e.id}` }),
      )
      .use({
        before: async (request: Req) => {
          if (!request.context) throw new Error('no context');
          request.response = { headers: {} };
        },
      });
    await expect(handler({ id: 'two-ctx' }, fakeContext(10_000))).rejects.toThrow('transient');
    expect(await handler({ id: 'two-ctx' }, fakeContext(10_000))).toBe('ok');
    expect(runs).toBe(2);
  });

  it('a later `before` writing a default response, the handler timed out by Middy (default or wrapped answer): released, the retry runs', async () => {
    for (const wrapped of [false, true]) {
      let runs = 0;
      const handler = middy(
        async (_e: Ev) => {
          runs += 1;
          await sleep(runs === 1 ? 400 : 0);
          return 'ok';
        },
        wrapped
          ? {
              timeoutEarlyInMillis: 150,
              timeoutEarlyResponse: idempotentTimeoutResponse(() => ({ statusCode: 504 })),
            }
          : { timeoutEarlyInMillis: 150 },
      )
        .use(idem())
        .use(defaultResponse);
      const id = `default-timeout-${wrapped}`;
      const first = await settle(handler({ id }, fakeContext(300)));
      if (wrapped) expect(first.value).toEqual({ statusCode: 504 });
      else expect(first.error).toBeInstanceOf(Error);
      await sleep(400);
      expect(await handler({ id }, fakeContext(10_000))).toBe('ok');
      expect(runs).toBe(2);
    }
  });

  it('a synchronous handler throwing after a default response: released; returning: recorded', async () => {
    let runs = 0;
    const handler = middy((_e: Ev) => {
      runs += 1;
      if (runs === 1) throw new Error('sync');
      return 'ok';
    })
      .use(idem())
      .use({
        ...defaultResponse,
        after: async (request: Req) => {
          request.response = `${request.response}!`;
        },
      });
    await expect(handler({ id: 'sync' }, fakeContext(10_000))).rejects.toThrow('sync');
    expect(await handler({ id: 'sync' }, fakeContext(10_000))).toBe('ok!');
    expect(await handler({ id: 'sync' }, fakeContext(10_000))).toBe('ok!');
    expect(runs).toBe(2);
  });

  it('a later `before` throws, a later `onError` answers early (undefined, a value, a new error pair): as Middy alone, released', async () => {
    const onErrors: Array<(request: Req) => Promise<unknown>> = [
      async (request) => {
        request.earlyResponse = undefined; // Middy rethrows request.error
      },
      async () => ({ statusCode: 400 }),
      async (request) => {
        request.response = undefined;
        request.error = new Error('normalized');
      },
    ];
    for (const [k, onError] of onErrors.entries()) {
      let runs = 0;
      let valid = false;
      const handler = middy(async (_e: Ev) => {
        runs += 1;
        return 'ok';
      })
        .use(idem())
        .use({ onError })
        .use({
          before: async () => {
            if (!valid) throw new Error('400 invalid input');
          },
        });
      const id = `before-throws-${k}`;
      const first = await settle(handler({ id }, fakeContext(10_000)));
      if (k === 1) expect(first.value).toEqual({ statusCode: 400 });
      else
        expect((first.error as Error).message).toBe(k === 0 ? '400 invalid input' : 'normalized');
      valid = true;
      expect(await handler({ id }, fakeContext(10_000))).toBe('ok');
      expect(runs).toBe(1);
    }
  });

  it('a later `before` writing a catch-like pair itself (no throw): the handler throws: released; it returns, an `after` throws: a marker', async () => {
    for (const returns of [false, true]) {
      let runs = 0;
      const handler = middy(async (_e: Ev) => {
        runs += 1;
        if (!returns && runs === 1) throw new Error('transient');
        return 'ok';
      })
        .use(idem())
        .use({
          after: async () => {
            if (returns) throw new Error('response invalid');
          },
        })
        .use({
          before: async (request: Req) => {
            request.response = undefined;
            request.error = new Error('noted'); // (a hook noting an error, no throw)
            request.error = undefined;
          },
        });
      const id = `pair-in-before-${returns}`;
      await expect(handler({ id }, fakeContext(10_000))).rejects.toThrow(
        returns ? 'response invalid' : 'transient',
      );
      const retry = await settle(handler({ id }, fakeContext(10_000)));
      if (returns) expect(retry.error).toBeInstanceOf(OutcomeNotRecordedError);
      else expect(retry.value).toBe('ok');
      expect(runs).toBe(returns ? 1 : 2);
    }
  });
});
