import { OutcomeNotRecordedError } from '@idem/core';
import { expect, it } from 'vitest';
import { functionScope, idempotency, idempotentTimeoutResponse } from '../src/index.js';
import { fakeContext, settle, sleep, useEnv } from './lambda-env.js';
import { describeMiddy } from './middy-versions.js';

// rv21l review of lambda21 (the Middy handler-call watch): attacks on exactly-once through
// real @middy/core 6 chains. The middlewares below reproduce the hooks of the published Middy 6
// packages line for line where they touch the request (only @middy/core is installed here).

// biome-ignore lint/suspicious/noExplicitAny: a Middy request poked at as any middleware would
type Req = any;
type HttpEvent = {
  headers: Record<string, string>;
  body: unknown;
  requestContext?: { requestId: string };
};

/** @middy/http-json-body-parser 6 (`before`): reads `request.event` last. */
const jsonBodyParser = () => ({
  before: async (request: Req) => {
    const { headers, body } = request.event;
    const contentType = headers['Content-Type'] ?? headers['content-type'];
    if (!/^application\/(.+\+)?json($|;.+)/.test(contentType)) return;
    const data = request.event.isBase64Encoded
      ? Buffer.from(body, 'base64').toString()
      : (body as string);
    request.event.body = JSON.parse(data);
  },
});

/** @middy/do-not-wait-for-empty-event-loop 6 (`before`): reads `request.context` only. */
const doNotWaitForEmptyEventLoop = () => ({
  before: async (request: Req) => {
    request.context.callbackWaitsForEmptyEventLoop = false;
  },
});

/**
 * @middy/input-output-logger 6 with `awsContext: true` (`before`): reads `request.event`, then
 * `request.context`, in one synchronous run, as Middy's call of the handler does.
 */
const inputOutputLogger = (logged: unknown[]) => ({
  before: async (request: Req) => {
    const message = { event: request.event, context: { ...request.context } };
    logged.push(JSON.parse(JSON.stringify(message)));
  },
});

/** A later middleware whose `before` writes a default response (the handler's replaces it). */
const defaultResponse = () => ({
  before: async (request: Req) => {
    request.response = { statusCode: 200, headers: { 'x-powered-by': 'orders' } };
  },
});

/** An auth middleware that answers 401 early when the token is missing. */
const auth = () => ({
  before: async (request: Req) => {
    if (request.event.headers.authorization !== 'Bearer ok') return { statusCode: 401 };
    return undefined;
  },
});

/** @middy/http-error-handler 6 (`onError`), without a logger. */
const httpErrorHandler = () => ({
  onError: async (request: Req) => {
    if (request.response !== undefined) return;
    if (request.error.statusCode && request.error.expose === undefined)
      request.error.expose = request.error.statusCode < 500;
    if (!request.error.statusCode || !request.error.expose)
      request.error = { statusCode: 500, message: 'Internal Server Error', expose: true };
    if (request.error.expose) {
      request.response = { statusCode: request.error.statusCode, headers: {} };
      request.response.body = request.error.message;
    }
  },
});

const httpEvent = (key: string, extra: Record<string, string> = {}): HttpEvent => ({
  headers: { 'content-type': 'application/json', 'idempotency-key': key, ...extra },
  body: JSON.stringify({ amount: 42 }),
});

/**
 * A handler answering 201 that counts its runs; the runs `throwsOn` picks throw (after Middy's
 * abort signal fired, when `awaitAbort`: a handler that Middy's early timeout ends).
 */
function counting(throwsOn: (run: number) => boolean = () => false, awaitAbort = false) {
  const counter = {
    runs: 0,
    handler: async (_e: HttpEvent, _c: unknown, { signal }: { signal: AbortSignal }) => {
      counter.runs += 1;
      if (!throwsOn(counter.runs)) return { statusCode: 201 };
      if (awaitAbort) await new Promise((r) => signal.addEventListener('abort', r, { once: true }));
      throw new Error('card declined');
    },
  };
  return counter;
}

describeMiddy('rv21l: the Middy handler-call watch under real chains (redis)', ({ middy }) => {
  const env = useEnv('redis');
  const idem = () =>
    idempotency({
      scope: functionScope,
      store: env().store,
      key: (e: HttpEvent) => e.headers['idempotency-key'] ?? '',
    });
  /** idempotency(), http-json-body-parser, do-not-wait-for-empty-event-loop, a default response. */
  const parsedChain = (
    handler: ReturnType<typeof counting>['handler'],
    plugin?: Parameters<typeof middy>[1],
  ) =>
    middy(handler, plugin)
      .use(idem())
      .use(jsonBodyParser())
      .use(doNotWaitForEmptyEventLoop())
      .use(defaultResponse());

  // FINDING (MEDIUM), fixed: the call watch paired a read of `request.event` with a LATER read
  // of `request.context` in another hook (http-json-body-parser ends on an event read,
  // do-not-wait-for-empty-event-loop reads only the context), so a usual chain looked like
  // Middy's call of the handler in the `before` chain: a later default response was taken for
  // the handler's return. The handler's throw then left a not-recorded marker (its retry can
  // never run: OutcomeNotRecordedError for good), and a later `before`'s early 401 was recorded
  // and replayed to the retry that carries the token (the handler never ran). Middy's call
  // reads both in one synchronous run: the pair now counts only within one.
  it('json-body-parser, do-not-wait, a default response: a handler that threw runs again on retry', async () => {
    const counter = counting((run) => run === 1);
    const handler = parsedChain(counter.handler);
    await expect(handler(httpEvent('k-throw'), fakeContext(10_000))).rejects.toThrow(
      'card declined',
    );
    const retry = await settle(handler(httpEvent('k-throw'), fakeContext(10_000)));
    expect(retry.error).toBeUndefined();
    expect(retry.value).toEqual({ statusCode: 201 });
    expect(counter.runs).toBe(2);
  });

  it('json-body-parser, do-not-wait, a default response, an early 401: the retry with the token runs the handler', async () => {
    const counter = counting();
    const handler = parsedChain(counter.handler).use(auth());
    expect(await handler(httpEvent('k-401'), fakeContext(10_000))).toEqual({ statusCode: 401 });
    const retry = await handler(
      httpEvent('k-401', { authorization: 'Bearer ok' }),
      fakeContext(10_000),
    );
    expect(retry).toEqual({ statusCode: 201 });
    expect(counter.runs).toBe(1);
  });

  it('held: the same chain, the handler returns and a later `after` throws: a marker, never a second run', async () => {
    const counter = counting();
    let invalid = true;
    const handler = parsedChain(counter.handler).use({
      after: async () => {
        if (invalid) throw new Error('response invalid');
      },
    });
    await expect(handler(httpEvent('k-after'), fakeContext(10_000))).rejects.toThrow(
      'response invalid',
    );
    invalid = false;
    const retry = await settle(handler(httpEvent('k-after'), fakeContext(10_000)));
    expect(retry.error).toBeInstanceOf(OutcomeNotRecordedError);
    expect(counter.runs).toBe(1);
  });

  // FINDING (LOW), fixed: `mayHaveCalled` took any idempotency()'s getter for its own watch.
  // An outer idempotency() whose watch of `request.event` a later middleware replaced (delete
  // and assign: an event normalizer), then an inner idempotency() installing its getter there,
  // never saw Middy's call, yet believed its watch intact: the handler's return was a `before`
  // write to it, so a later `after`'s throw released the outer key after the handler ran. A
  // client retry (a new API Gateway request id, so the inner key differs) ran it again.
  it('two idempotency(), the outer watch replaced between them: the outer key is never released after the handler ran', async () => {
    let runs = 0;
    let invalid = true;
    const inner = idempotency({
      store: env().store,
      scope: ['inner'],
      key: (e: HttpEvent) => e.requestContext?.requestId ?? 'none',
    });
    const handler = middy(async () => {
      runs += 1;
      return { statusCode: 201 };
    })
      .use(idem())
      .use({
        before: async (request: Req) => {
          const event = request.event;
          delete request.event;
          request.event = { ...event, headers: { ...event.headers } };
        },
      })
      .use(inner)
      .use({
        after: async () => {
          if (invalid) throw new Error('response invalid');
        },
      });
    const first = { ...httpEvent('k-two'), requestContext: { requestId: 'r1' } };
    await expect(handler(first, fakeContext(10_000))).rejects.toThrow('response invalid');
    invalid = false;
    const again = { ...httpEvent('k-two'), requestContext: { requestId: 'r2' } };
    const retry = await settle(handler(again, fakeContext(10_000)));
    expect(retry.error).toBeInstanceOf(OutcomeNotRecordedError);
    expect(runs).toBe(1);
  });

  it('held: a later `before` freezes the request (the watch stays), or replaces request.event and request.context with copies: a return is never released, a throw is', async () => {
    const mutators: Array<(request: Req) => void> = [
      (request) => {
        Object.freeze(request);
      },
      (request) => {
        request.event = structuredClone(request.event);
        request.context = { ...request.context };
      },
    ];
    for (const [m, mutate] of mutators.entries()) {
      for (const fails of [false, true]) {
        const counter = counting((run) => fails && run === 1);
        let invalid = true;
        let fence: number | undefined;
        const handler = middy(async (event: HttpEvent, context: Req, options: Req) => {
          fence = context.idempotency?.fence;
          return counter.handler(event, context, options);
        })
          .use(idem())
          .use({
            before: async (request: Req) => {
              mutate(request);
            },
            after: async () => {
              if (!fails && invalid) throw new Error('response invalid');
            },
          })
          .use(defaultResponse());
        const key = `k-mutate-${m}-${fails}`;
        const first = await settle(handler(httpEvent(key), fakeContext(10_000)));
        expect(first.error).toBeInstanceOf(Error);
        expect(fence).toBe(1);
        invalid = false;
        const retry = await settle(handler(httpEvent(key), fakeContext(10_000)));
        if (fails) expect(retry.value).toEqual({ statusCode: 201 });
        else expect(retry.error).toBeInstanceOf(OutcomeNotRecordedError);
        expect(counter.runs).toBe(fails ? 2 : 1);
      }
    }
  });

  it('held: a validator-like `before` (reads the event, awaits, reads the context, throws 400) with http-error-handler: released, the retry runs once', async () => {
    let runs = 0;
    let valid = false;
    const handler = middy(async () => {
      runs += 1;
      return { statusCode: 201 };
    })
      .use(idem())
      .use(jsonBodyParser())
      .use(defaultResponse())
      .use({
        before: async (request: Req) => {
          const event = request.event;
          await sleep(1);
          if (!valid || !event.body) {
            void request.context.preferredLanguage;
            throw Object.assign(new Error('Event object failed validation'), {
              statusCode: 400,
            });
          }
        },
      })
      .use(httpErrorHandler());
    expect(await handler(httpEvent('k-valid'), fakeContext(10_000))).toEqual({
      statusCode: 400,
      headers: {},
      body: 'Event object failed validation',
    });
    valid = true;
    expect(await handler(httpEvent('k-valid'), fakeContext(10_000))).toEqual({ statusCode: 201 });
    expect(await handler(httpEvent('k-valid'), fakeContext(10_000))).toEqual({ statusCode: 201 });
    expect(runs).toBe(1);
  });

  it('held: an accessor plugin whose event getter reads the context, a default response: a throw is released, a return replayed', async () => {
    let runs = 0;
    const handler = middy(
      async () => {
        runs += 1;
        if (runs === 1) throw new Error('card declined');
        return { statusCode: 201 };
      },
      {
        requestStart: ((request: Req) => {
          let event = request.event;
          Object.defineProperty(request, 'event', {
            configurable: true,
            enumerable: true,
            get() {
              void this.context.awsRequestId; // (a tracing plugin)
              return event;
            },
            set(value) {
              event = value;
            },
          });
        }) as () => void,
      },
    )
      .use(idem())
      .use(defaultResponse());
    await expect(handler(httpEvent('k-plugin'), fakeContext(10_000))).rejects.toThrow(
      'card declined',
    );
    expect(await handler(httpEvent('k-plugin'), fakeContext(10_000))).toEqual({
      statusCode: 201,
    });
    expect(await handler(httpEvent('k-plugin'), fakeContext(10_000))).toEqual({
      statusCode: 201,
    });
    expect(runs).toBe(2);
  });

  // (The same finding under Middy's early timeout: the default response was taken for the
  // handler's return, the timeout's throw left a marker, the retry got a 500 for good.)
  it('json-body-parser, do-not-wait, a default response, Middy early timeout (default answer), http-error-handler: released, the retry runs', async () => {
    const counter = counting((run) => run === 1, true);
    const handler = parsedChain(counter.handler).use(httpErrorHandler());
    const first = await handler(httpEvent('k-timeout'), fakeContext(300));
    expect(first).toEqual({ statusCode: 500, headers: {}, body: 'Internal Server Error' });
    await sleep(50);
    expect(await handler(httpEvent('k-timeout'), fakeContext(10_000))).toEqual({
      statusCode: 201,
    });
    expect(counter.runs).toBe(2);
  });

  // (And with a wrapped 504: the default response made the timeout's answer look like a write
  // after the handler's return, so the 504 was recorded and replayed to every retry, though
  // the handler never returned it.)
  it('json-body-parser, do-not-wait, a default response, Middy early timeout (a wrapped 504): released, never replayed', async () => {
    const counter = counting((run) => run === 1, true);
    const handler = parsedChain(counter.handler, {
      timeoutEarlyResponse: idempotentTimeoutResponse(() => ({ statusCode: 504 })),
    });
    expect(await handler(httpEvent('k-504'), fakeContext(300))).toEqual({ statusCode: 504 });
    await sleep(50);
    expect(await handler(httpEvent('k-504'), fakeContext(10_000))).toEqual({ statusCode: 201 });
    expect(counter.runs).toBe(2);
  });

  // The documented cost that stays: a hook reading both in one run (input-output-logger with
  // `awsContext`) looks like the call; `idem.last` (used last) still tells its default
  // response from the handler's return.
  it('held: input-output-logger (awsContext), a default response, `idem.last`: a handler that threw runs again on retry', async () => {
    const logged: unknown[] = [];
    const counter = counting((run) => run === 1);
    const guard = idem();
    const handler = middy(counter.handler)
      .use(guard)
      .use(inputOutputLogger(logged))
      .use(defaultResponse())
      .use(guard.last);
    await expect(handler(httpEvent('k-logger'), fakeContext(10_000))).rejects.toThrow(
      'card declined',
    );
    expect(await handler(httpEvent('k-logger'), fakeContext(10_000))).toEqual({
      statusCode: 201,
    });
    expect(await handler(httpEvent('k-logger'), fakeContext(10_000))).toEqual({
      statusCode: 201,
    });
    expect(counter.runs).toBe(2);
    expect(logged).toHaveLength(2); // (the replay answers in `before`: no later hook runs)
  });
});
