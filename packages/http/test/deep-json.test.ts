import { createMemoryStore } from '@idem/store-memory';
import { describe, expect, it } from 'vitest';
import {
  bodyFromParsed,
  createIdempotencyHandler,
  type IncomingRequest,
  REPLAYED_HEADER,
  withIdempotency,
} from '../src/index.js';

// Canonical JSON recurses: a body nested 100k deep used to blow the stack (RangeError -> 500).
// Such a body is fingerprinted by its bytes instead.
const DEPTH = 100_000;
const deepArray = (inner: string) => `${'['.repeat(DEPTH)}${inner}${']'.repeat(DEPTH)}`;
const deepObject = (inner: string) => `${'{"a":'.repeat(DEPTH)}${inner}${'}'.repeat(DEPTH)}`;

function raw(key: string, body: string): Request {
  return new Request('http://api.test/deep', {
    method: 'POST',
    headers: { 'idempotency-key': key, 'content-type': 'application/json' },
    body,
  });
}

describe('deeply nested JSON bodies', () => {
  it.each([
    ['arrays', deepArray],
    ['objects', deepObject],
  ])('fingerprints %s nested 100k deep by their bytes: run once, replay, 422', async (_n, deep) => {
    let runs = 0;
    const fetchLike = withIdempotency(
      async (request) => {
        runs++;
        // The handler can still read the body it was given.
        expect((await request.text()).length).toBe(deep('1').length);
        return new Response(`run ${runs}`, { status: 201 });
      },
      { store: createMemoryStore(), scope: 'global' },
    );
    const first = await fetchLike(raw('deep', deep('1')));
    expect(first.status).toBe(201);
    expect(await first.text()).toBe('run 1');
    const replay = await fetchLike(raw('deep', deep('1')));
    expect(replay.headers.get(REPLAYED_HEADER)).toBe('true');
    expect(await replay.text()).toBe('run 1');
    expect((await fetchLike(raw('deep', deep('2')))).status).toBe(422);
    expect(runs).toBe(1);
  });

  it('fingerprints a deep body a framework already parsed', async () => {
    const text = deepArray('"x"');
    const body = bodyFromParsed(JSON.parse(text), 'application/json', 1_048_576);
    expect(body.kind).toBe('json');
    const handler = createIdempotencyHandler<null>({ store: createMemoryStore(), scope: 'global' });
    const incoming = (inner: string): IncomingRequest<null> => ({
      native: null,
      method: 'POST',
      url: '/deep',
      header: (name) => (name === 'idempotency-key' ? 'parsed' : undefined),
      readBody: async (limit) =>
        bodyFromParsed(JSON.parse(deepArray(inner)), 'application/json', limit),
    });
    const first = await handler.begin(incoming('"x"'));
    expect(first.action).toBe('execute');
    if (first.action !== 'execute') return;
    first.recorder.start(200, new Headers());
    first.recorder.capture(new TextEncoder().encode('done'));
    await first.recorder.finish();
    const again = await handler.begin(incoming('"x"'));
    expect(again).toMatchObject({ action: 'respond', replayed: true });
    const other = await handler.begin(incoming('"y"'));
    expect(other.action === 'respond' && other.response.status).toBe(422);
  });

  it('still measures a deep parsed body against the limit', () => {
    expect(() => bodyFromParsed(JSON.parse(deepArray('1')), 'application/json', 1_000)).toThrow(
      /larger than 1000 bytes/,
    );
  });
});
