import { decodeOutcome, encodeOutcome, type IdempotencyStore, type JsonValue } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import { describe, expect, it } from 'vitest';
import { PROBLEM_TYPES, withIdempotency } from '../src/index.js';

// rev21 (hono rev10-cors): the CORS fields of a response are recorded with the request Origin
// and replayed only to that Origin; what a store hands back is checked like the rest of the
// outcome (a forged field is never sent).

type Meta = Record<string, JsonValue | undefined>;

/** A memory store whose found records have their outcome metadata rewritten by `rewrite`. */
function rewritingStore(rewrite: (meta: Meta) => Meta): IdempotencyStore {
  const store = createMemoryStore();
  const acquire = store.acquire.bind(store);
  store.acquire = async (input) => {
    const result = await acquire(input);
    if (result.kind !== 'found' || !result.record.outcome) return result;
    const outcome = decodeOutcome(result.record.outcome);
    const meta = rewrite({ ...outcome.meta });
    return {
      ...result,
      record: { ...result.record, outcome: encodeOutcome({ meta, body: outcome.body }) },
    };
  };
  return store;
}

function server(store: IdempotencyStore = createMemoryStore()) {
  let runs = 0;
  const handler = withIdempotency(
    async (request) => {
      runs++;
      const origin = request.headers.get('origin');
      const headers: Record<string, string> = { 'content-type': 'text/plain' };
      if (origin === 'https://app.example') headers['access-control-allow-origin'] = origin;
      return new Response('ok', { status: 201, headers });
    },
    { store, scope: 'global', onWarning: () => {} },
  );
  const send = async (origin?: string) => {
    const response = await handler(
      new Request('http://api.test/charges', {
        method: 'POST',
        headers: { 'idempotency-key': 'k-1', ...(origin ? { origin } : {}) },
      }),
    );
    return {
      status: response.status,
      allowOrigin: response.headers.get('access-control-allow-origin'),
      cookie: response.headers.get('set-cookie'),
      vary: response.headers.get('vary'),
      text: await response.text(),
    };
  };
  return { send, runs: () => runs };
}

describe('rev21 @idem/http: CORS fields of a replay', () => {
  it('to the same Origin only, with Vary: origin', async () => {
    const { send, runs } = server();
    expect((await send('https://app.example')).allowOrigin).toBe('https://app.example');
    expect(await send('https://app.example')).toMatchObject({
      status: 201,
      allowOrigin: 'https://app.example',
      vary: 'origin',
    });
    expect(await send('https://other.example')).toMatchObject({
      status: 201,
      allowOrigin: null,
      vary: 'origin',
    });
    expect(runs()).toBe(1);
  });

  it('a record without CORS fields (and one of an earlier version) replays as it always did', async () => {
    const { send } = server(rewritingStore(({ cors: _cors, ...meta }) => meta));
    await send('https://app.example');
    expect(await send('https://app.example')).toMatchObject({
      status: 201,
      allowOrigin: null,
      vary: null,
      text: 'ok',
    });
  });

  it.each([
    [
      'a name that is no CORS field',
      { origin: 'https://app.example', headers: [['set-cookie', 'a=1']] },
    ],
    [
      'a value with a line break',
      {
        origin: 'https://app.example',
        headers: [['access-control-allow-origin', 'x\r\nset-cookie: a=1']],
      },
    ],
    ['no origin field', { headers: [['access-control-allow-origin', '*']] }],
    ['not an object', 'https://app.example'],
  ] as const)(
    'a stored CORS record with %s is an unreadable outcome (500), never sent',
    async (_name, cors) => {
      const { send } = server(rewritingStore((meta) => ({ ...meta, cors: cors as JsonValue })));
      await send('https://app.example');
      const replay = await send('https://app.example');
      expect(replay).toMatchObject({ status: 500, allowOrigin: null, cookie: null });
      expect(JSON.parse(replay.text).type).toBe(PROBLEM_TYPES.outcomeUnreadable);
    },
  );
});
