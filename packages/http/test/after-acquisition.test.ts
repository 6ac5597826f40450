import { setTimeout as sleep } from 'node:timers/promises';
import { spyStore } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { describe, expect, it } from 'vitest';
import {
  createIdempotencyHandler,
  finalOnceStarted,
  type HttpIdempotencyOptions,
  PROBLEM_TYPES,
  REPLAYED_HEADER,
  type ResponsePolicy,
} from '../src/index.js';

// Every path after the key was acquired must settle the execution: released (the default
// policy) or recorded as a 500 (finalOnceStarted), and its heartbeats must stop. A path that
// does neither leaves the key answering 409 for maxHoldMs.

const LEASE = { leaseMs: 300, heartbeatMs: 50 } as const;

function post(key: string): Request {
  return new Request('http://api.test/charges', {
    method: 'POST',
    headers: { 'idempotency-key': key, 'content-type': 'application/json' },
    body: '{"amount":1}',
  });
}

type Next = (request: Request) => Response | Promise<Response>;

/** Bad handlers: each hands back something the recorder cannot send as the response. */
const BAD_HANDLERS: [string, () => Next][] = [
  ['returns undefined', () => async () => undefined as unknown as Response],
  ['returns a plain object', () => async () => ({ status: 200 }) as unknown as Response],
  [
    'returns a Response whose body was consumed',
    () => async () => {
      const response = new Response('already read');
      await response.text();
      return response;
    },
  ],
  [
    'returns a Response whose body is locked by a reader',
    () => async () => {
      const response = new Response('locked');
      response.body!.getReader();
      return response;
    },
  ],
  ['returns Response.error()', () => async () => Response.error()],
  [
    'throws synchronously',
    () => () => {
      throw new Error('sync throw');
    },
  ],
];

function setup(options: Partial<HttpIdempotencyOptions> = {}) {
  const spied = spyStore(createMemoryStore());
  const handler = createIdempotencyHandler({
    store: spied.store,
    scope: () => ({ principal: 'tenant-a' }),
    onWarning: () => {},
    ...LEASE,
    ...options,
  });
  return { spied, handler };
}

/** A handler whose outcome policy throws, and the warnings it reports. */
function setupThrowingPolicy() {
  const warnings: string[] = [];
  const broken: ResponsePolicy = () => {
    throw new Error('policy bug');
  };
  const { spied, handler } = setup({
    isFinal: broken,
    onWarning: (message) => warnings.push(message),
  });
  return { spied, handler, warnings };
}

/** Settles a `handle` call into its response (body read) or its error. */
async function outcome(promise: Promise<Response>): Promise<Response | Error> {
  try {
    const response = await promise;
    await response.clone().arrayBuffer();
    return response;
  } catch (error) {
    return error as Error;
  }
}

describe('after the key was acquired, every path settles the execution', () => {
  it.each(BAD_HANDLERS)('releases when the handler %s (default policy)', async (_name, bad) => {
    const { spied, handler } = setup();
    const first = await outcome(handler.handle(post('k1'), bad()));
    if (first instanceof Response) expect(first.status).toBe(500);
    expect(spied.calls).toMatchObject({ acquire: 1, release: 1, complete: 0 });
    // Heartbeats stopped: several heartbeat intervals pass without a renewal.
    const extends_ = spied.calls.extend;
    await sleep(LEASE.heartbeatMs * 4);
    expect(spied.calls.extend).toBe(extends_);
    // The retry executes at once instead of getting 409 for the lease (or maxHoldMs).
    let ran = 0;
    const retry = await handler.handle(post('k1'), async () => {
      ran++;
      return new Response('ok', { status: 201 });
    });
    expect(retry.status).toBe(201);
    expect(await retry.text()).toBe('ok');
    expect(ran).toBe(1);
  });

  it.each(BAD_HANDLERS)('records a 500 when the handler %s (finalOnceStarted)', async (_n, bad) => {
    const { spied, handler } = setup({ isFinal: finalOnceStarted });
    const first = await outcome(handler.handle(post('k2'), bad()));
    expect(first).toBeInstanceOf(Response);
    const response = first as Response;
    expect(response.status).toBe(500);
    expect(await response.json()).toMatchObject({ type: PROBLEM_TYPES.handlerFailed });
    expect(spied.calls).toMatchObject({ complete: 1, release: 0 });
    const replay = await handler.handle(post('k2'), async () => new Response('second run'));
    expect(replay.status).toBe(500);
    expect(replay.headers.get(REPLAYED_HEADER)).toBe('true');
  });

  it('records the response when the outcome policy throws: the handler runs once, a retry replays, the error is reported', async () => {
    const { spied, handler, warnings } = setupThrowingPolicy();
    let runs = 0;
    const app = async () => {
      runs++;
      return new Response('ok', { status: 201, headers: { 'content-type': 'text/plain' } });
    };
    // The app's response reaches its client as the app wrote it.
    const first = await handler.handle(post('k3'), app);
    expect(first.status).toBe(201);
    expect(await first.text()).toBe('ok');
    expect(spied.calls).toMatchObject({ release: 0, complete: 1 });
    const extends_ = spied.calls.extend;
    await sleep(LEASE.heartbeatMs * 4);
    expect(spied.calls.extend).toBe(extends_);
    // The policy's error is not lost: onWarning gets it, with the key's record named.
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain('isFinal');
    expect(warnings[0]).toContain('Error: policy bug');
    // The retry is a replay of the recorded response; the handler never runs twice.
    const retry = await handler.handle(post('k3'), app);
    expect(retry.status).toBe(201);
    expect(retry.headers.get(REPLAYED_HEADER)).toBe('true');
    expect(await retry.text()).toBe('ok');
    expect(runs).toBe(1);
    expect(spied.calls).toMatchObject({ release: 0, complete: 1 });
  });

  it('records the 500 problem when the outcome policy throws on it after the handler threw (the handler runs once)', async () => {
    const { spied, handler, warnings } = setupThrowingPolicy();
    let runs = 0;
    const app = async (): Promise<Response> => {
      runs++;
      throw new Error('handler failed');
    };
    const first = await handler.handle(post('k5'), app);
    expect(first.status).toBe(500);
    expect(await first.json()).toMatchObject({ type: PROBLEM_TYPES.handlerFailed });
    expect(spied.calls).toMatchObject({ release: 0, complete: 1 });
    const extends_ = spied.calls.extend;
    await sleep(LEASE.heartbeatMs * 4);
    expect(spied.calls.extend).toBe(extends_);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain('Error: policy bug');
    const retry = await handler.handle(post('k5'), app);
    expect(retry.status).toBe(500);
    expect(retry.headers.get(REPLAYED_HEADER)).toBe('true');
    expect(runs).toBe(1);
  });

  it('releases when an adapter finishes a recorder it never started', async () => {
    const { spied, handler } = setup();
    const decision = await handler.begin({
      native: post('k4'),
      method: 'POST',
      url: 'http://api.test/charges',
      header: (name) => (name === 'idempotency-key' ? 'k4' : undefined),
      readBody: async () => ({ kind: 'none' }),
    });
    expect(decision.action).toBe('execute');
    if (decision.action !== 'execute') return;
    await expect(decision.recorder.finish()).rejects.toThrow(/start/);
    expect(spied.calls).toMatchObject({ release: 1, complete: 0 });
  });
});

describe('responses of other Response classes', () => {
  it('records a Response-like object of another implementation (not instanceof Response)', async () => {
    const { spied, handler } = setup();
    // What @hono/node-server's lightweight Response or another realm's looks like to us.
    const inner = new Response('from elsewhere', { status: 201 });
    const foreign = {
      status: inner.status,
      statusText: inner.statusText,
      headers: inner.headers,
      type: inner.type,
      get body() {
        return inner.body;
      },
      get bodyUsed() {
        return inner.bodyUsed;
      },
    } as unknown as Response;
    expect(foreign instanceof Response).toBe(false);
    const first = await handler.handle(post('k-foreign'), async () => foreign);
    expect(first.status).toBe(201);
    expect(await first.text()).toBe('from elsewhere');
    expect(spied.calls.complete).toBe(1);
    const replay = await handler.handle(post('k-foreign'), async () => new Response('again'));
    expect(replay.headers.get(REPLAYED_HEADER)).toBe('true');
    expect(await replay.text()).toBe('from elsewhere');
  });
});
