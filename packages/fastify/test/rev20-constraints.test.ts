import { json, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import Fastify from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

describe('@idem/fastify: routes told apart by constraints are separate operations', () => {
  const app = Fastify();
  let url = '';
  const runs: string[] = [];
  beforeAll(async () => {
    await app.register(idempotency, {
      store: createMemoryStore(),
      scope: () => ({ principal: 'p' }),
      onWarning: () => {},
    });
    app.post('/charges', { constraints: { version: '1.0.0' } }, async () => {
      runs.push('v1');
      return { version: 1 };
    });
    app.post('/charges', { constraints: { version: '2.0.0' } }, async () => {
      runs.push('v2');
      return { version: 2 };
    });
    app.post('/tenant', { constraints: { host: 'a.example' } }, async () => {
      runs.push('a');
      return { host: 'a' };
    });
    app.post('/tenant', { constraints: { host: 'b.example' } }, async () => {
      runs.push('b');
      return { host: 'b' };
    });
    url = await app.listen({ port: 0, host: '127.0.0.1' });
  });
  afterAll(() => app.close());

  it('never replays a version-1 answer to a request version 2 serves', async () => {
    const v1 = await send(url, '/charges', {
      key: 'k',
      body: {},
      headers: { 'accept-version': '1.0.0' },
    });
    expect(json(v1)).toEqual({ version: 1 });
    const v2 = await send(url, '/charges', {
      key: 'k',
      body: {},
      headers: { 'accept-version': '2.0.0' },
    });
    expect(v2.headers['idempotent-replayed']).toBeUndefined();
    // Another spelling of the same version's constraint is the same route: replayed.
    const v1again = await send(url, '/charges', {
      key: 'k',
      body: {},
      headers: { 'accept-version': '1.x' },
    });
    expect(v1again.headers['idempotent-replayed']).toBe('true');
    expect(json(v1again)).toEqual({ version: 1 });
  });

  it("never replays one host route's answer to another host's route", async () => {
    const a = await send(url, '/tenant', { key: 'h', body: {}, headers: { host: 'a.example' } });
    expect(json(a)).toEqual({ host: 'a' });
    const b = await send(url, '/tenant', { key: 'h', body: {}, headers: { host: 'b.example' } });
    expect(b.headers['idempotent-replayed']).toBeUndefined();
  });
});
