import { createMemoryStore } from '@idem/store-memory';
import { describe, expect, it } from 'vitest';
import {
  BodyAlreadyReadError,
  bodyFromParsed,
  createIdempotencyHandler,
  type HttpIdempotencyOptions,
  PROBLEM_TYPES,
  REPLAYED_HEADER,
  withIdempotency,
} from '../src/index.js';

// Fingerprint guarantees of the README (step 4) that no test held when the code behind them
// was mutated (mutation audit, muthttp). Web Request/Response through withIdempotency.

function counting(options: Partial<HttpIdempotencyOptions<Request>> = {}) {
  let runs = 0;
  const handler = withIdempotency(async () => Response.json({ run: ++runs }, { status: 201 }), {
    store: createMemoryStore(),
    scope: 'global',
    ...options,
  });
  return { handler, runs: () => runs };
}

function post(
  url: string,
  key: string,
  body = '{"a":1}',
  headers: Record<string, string> = {},
): Request {
  return new Request(url, {
    method: 'POST',
    headers: { 'idempotency-key': key, 'content-type': 'application/json', ...headers },
    body,
  });
}

async function problemType(response: Response): Promise<string> {
  return ((await response.json()) as { type: string }).type;
}

describe('the _method query parameter with fingerprint.query: false', () => {
  it('keeps ?_method=DELETE and ?_method=PATCH two requests under one key (422), and replays the same one', async () => {
    const { handler, runs } = counting({ fingerprint: { query: false } });
    const first = await handler(post('http://api.test/items?_method=DELETE', 'm-1'));
    expect(first.status).toBe(201);
    // Another query is no other request when the query is left out...
    const same = await handler(post('http://api.test/items?_method=DELETE&page=2', 'm-1'));
    expect(same.status).toBe(201);
    expect(same.headers.get(REPLAYED_HEADER)).toBe('true');
    // ...but another overridden method is: a method-override middleware runs PATCH now.
    const other = await handler(post('http://api.test/items?_method=PATCH', 'm-1'));
    expect(other.status).toBe(422);
    expect(await problemType(other)).toBe(PROBLEM_TYPES.keyReused);
    const none = await handler(post('http://api.test/items', 'm-1'));
    expect(none.status).toBe(422);
    expect(runs()).toBe(1);
  });
});

describe('JSON bodies that are not UTF-8', () => {
  it('are fingerprinted by their bytes: two invalid bytes are two requests (422), not one decoded U+FFFD', async () => {
    const { handler, runs } = counting();
    const body = (byte: number) =>
      new Uint8Array([...Buffer.from('{"a":"'), byte, ...Buffer.from('"}')]);
    const send = (byte: number) =>
      handler(
        new Request('http://api.test/items', {
          method: 'POST',
          headers: { 'idempotency-key': 'u-1', 'content-type': 'application/json' },
          body: body(byte),
        }),
      );
    expect((await send(0xff)).status).toBe(201);
    const replay = await send(0xff);
    expect(replay.headers.get(REPLAYED_HEADER)).toBe('true');
    const other = await send(0xfe);
    expect(other.status).toBe(422);
    expect(await problemType(other)).toBe(PROBLEM_TYPES.keyReused);
    expect(runs()).toBe(1);
  });
});

describe('a parsed body and an extras hook that changes it', () => {
  it('fingerprints the body as read, not what the hook made of the request object', async () => {
    let runs = 0;
    const handler = createIdempotencyHandler<{ body: Record<string, unknown> }>({
      store: createMemoryStore(),
      scope: 'global',
      fingerprint: {
        // A hook that normalizes the request it is given (here: drops a member in place).
        extras: (native) => {
          delete native.body.amount;
          return { tenant: 't' };
        },
      },
    });
    const begin = (body: Record<string, unknown>) => {
      const native = { body };
      return handler.begin({
        native,
        method: 'POST',
        url: '/charges',
        header: (name) =>
          name === 'idempotency-key'
            ? 'x-1'
            : name === 'content-type'
              ? 'application/json'
              : undefined,
        readBody: async (limit) => bodyFromParsed(native.body, 'application/json', limit),
      });
    };
    const first = await begin({ amount: 1, note: 'n' });
    expect(first.action).toBe('execute');
    if (first.action !== 'execute') return;
    runs++;
    const recorder = first.recorder;
    expect(recorder.start(201, new Headers({ 'content-type': 'text/plain' }))).toBe(true);
    recorder.capture(new TextEncoder().encode('charged 1'));
    await recorder.finish();
    // The same key with another amount: another request, whatever the hook deleted.
    const second = await begin({ amount: 2, note: 'n' });
    expect(second.action).toBe('respond');
    if (second.action !== 'respond') return;
    expect(second.response.status).toBe(422);
    expect(runs).toBe(1);
  });
});

describe('a body a parser decoded under a Content-Type naming its charset twice', () => {
  it('is refused (parsers pick either name), also when one of them is UTF-8', () => {
    for (const type of [
      'text/plain; charset=utf-8; charset=iso-8859-1',
      'text/plain; charset=iso-8859-1; charset=utf-8',
      'application/json; charset=utf-8; charset=utf-8',
    ]) {
      expect(() => bodyFromParsed('caf\u00e9', type, 1024), type).toThrow(BodyAlreadyReadError);
      expect(() => bodyFromParsed({ a: 'caf\u00e9' }, type, 1024), type).toThrow(
        BodyAlreadyReadError,
      );
    }
    // Named once, UTF-8 is taken.
    expect(bodyFromParsed('caf\u00e9', 'text/plain; charset=utf-8', 1024).kind).toBe('bytes');
  });
});

describe('the method under one operation of the scope hook', () => {
  it('keeps a POST and a PATCH with the same key and JSON body two requests (422)', async () => {
    const { handler, runs } = counting({
      // One key space across paths and methods.
      scope: () => ({ principal: 'p', operation: 'charges' }),
    });
    expect((await handler(post('http://api.test/charges', 'o-1'))).status).toBe(201);
    const patch = await handler(
      new Request('http://api.test/charges', {
        method: 'PATCH',
        headers: { 'idempotency-key': 'o-1', 'content-type': 'application/json' },
        body: '{"a":1}',
      }),
    );
    expect(patch.status).toBe(422);
    expect(await problemType(patch)).toBe(PROBLEM_TYPES.keyReused);
    expect(runs()).toBe(1);
  });
});
