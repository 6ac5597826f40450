import { createMemoryStore } from '@idem/store-memory';
import { describe, expect, it } from 'vitest';
import { withIdempotency } from '../src/index.js';

// rev21 (hono rev10-method-override): a middleware after idem that honours a method-override
// header runs another method than the request line's: the well-known override headers are in
// the fingerprint when a request sends one, and only then.

function server() {
  const runs: string[] = [];
  const store = createMemoryStore();
  const handler = withIdempotency(
    async (request) => {
      const effective = request.headers.get('x-http-method-override') ?? request.method;
      runs.push(effective);
      return Response.json({ did: effective });
    },
    { store, scope: 'global', onWarning: () => {} },
  );
  const send = async (headers: Record<string, string>, key = 'k-1') => {
    const response = await handler(
      new Request('http://api.test/items/1', {
        method: 'POST',
        headers: { 'idempotency-key': key, 'content-type': 'application/json', ...headers },
        body: '{}',
      }),
    );
    await response.arrayBuffer();
    return [response.status, response.headers.get('idempotent-replayed')] as const;
  };
  return { send, runs, store };
}

describe('rev21 @idem/http: method-override headers in the fingerprint', () => {
  it('another overridden method, or none, under the key is 422; the same one, however spelled, replays', async () => {
    const { send, runs } = server();
    expect(await send({ 'x-http-method-override': 'DELETE' })).toEqual([200, null]);
    expect(await send({ 'x-http-method-override': ' delete ' })).toEqual([200, 'true']);
    expect(await send({ 'x-http-method-override': 'PATCH' })).toEqual([422, null]);
    expect(await send({})).toEqual([422, null]);
    // Another header is another request: a server honours one of them, not every one.
    expect(await send({ 'x-http-method': 'DELETE' })).toEqual([422, null]);
    expect(await send({ 'x-method-override': 'DELETE' })).toEqual([422, null]);
    expect(runs).toEqual(['DELETE']);
  });

  it('an empty override, or one naming the request method, is the plain request (replayed across the upgrade)', async () => {
    const { send, runs } = server();
    expect(await send({})).toEqual([200, null]);
    expect(await send({ 'x-http-method-override': '' })).toEqual([200, 'true']);
    expect(await send({ 'x-http-method-override': 'post', 'x-http-method': 'POST' })).toEqual([
      200,
      'true',
    ]);
    expect(await send({ 'x-method-override': 'PUT' })).toEqual([422, null]);
    expect(runs).toEqual(['POST']);
  });
});
