import { generateKey } from '@idem/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config.js';
import { type RunningServer, startServer } from '../src/server.js';
import type { UsageJson } from './stack.js';

/**
 * Requests a hostile or careless client can send with one Idempotency-Key, over loopback
 * HTTP against the real server: none may run the model a second time (a new ledger entry),
 * and none may get another caller's recorded answer.
 */
describe('isolation of keys: path spellings and credentials', () => {
  let server: RunningServer;
  beforeAll(async () => {
    server = await startServer(parseConfig({ PORT: '0', MODEL_CHUNK_DELAY_MS: '0' }));
  });
  afterAll(async () => {
    await server?.close();
  });

  const usage = async () => (await (await fetch(`${server.url}/v1/usage`)).json()) as UsageJson;
  const post = (path: string, key: string, body: unknown, headers: Record<string, string> = {}) =>
    fetch(`${server.url}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': key, ...headers },
      body: JSON.stringify(body),
    });

  it.each([
    ['/api/messages', '/api/%6Dessages', { prompt: 'path variant', model: 'm' }],
    [
      '/v1/chat/completions',
      '/v1/chat/%63ompletions',
      { model: 'm', messages: [{ role: 'user', content: 'path variant' }] },
    ],
  ])(
    '%s and a percent-encoded spelling of it are one operation: never a second execution',
    async (path, variant, body) => {
      const key = generateKey();
      const auth = { authorization: 'Bearer sk-path' };
      const first = await post(path, key, body, auth);
      expect(first.status).toBeLessThan(300);
      const before = await usage();

      // The router sends the variant to the same handler; the key must not start afresh.
      const again = await post(variant, key, body, auth);
      const after = await usage();
      expect({
        executed: after.model_executions.started - before.model_executions.started,
        billed: after.totals.messages - before.totals.messages,
      }).toEqual({ executed: 0, billed: 0 });
      // A replay, or a refusal of the key (the path is part of the fingerprint): not a 2xx of its own.
      if (again.status < 300) expect(again.headers.get('idempotent-replayed')).toBe('true');
      else expect(again.status).toBe(422);
    },
  );

  it.each([
    [
      'Basic credentials',
      { authorization: 'Basic YWxpY2U6cHc=' },
      { authorization: 'Basic Ym9iOnB3' },
    ],
    ['x-api-key', { 'x-api-key': 'sk-alice' }, { 'x-api-key': 'sk-bob' }],
    ['a Bearer token and none', { authorization: 'Bearer sk-alice' }, {}],
  ])(
    'two callers with different %s and one key never share an answer',
    async (_name, alice, bob) => {
      const key = generateKey();
      const body = { prompt: `isolated ${key.slice(0, 8)}`, model: 'm' };
      const first = await post('/api/messages', key, body, alice);
      expect(first.status).toBe(201);
      const other = await post('/api/messages', key, body, bob);
      expect(other.status).toBe(201);
      expect(other.headers.get('idempotent-replayed')).toBeNull();
      const [a, b] = [
        (await first.json()) as { id: string },
        (await other.json()) as { id: string },
      ];
      expect(b.id).not.toBe(a.id);
    },
  );

  it('the same caller spelling its credentials differently (scheme case, spaces) keeps its key', async () => {
    const key = generateKey();
    const body = { prompt: 'same caller', model: 'm' };
    expect(
      (await post('/api/messages', key, body, { authorization: 'Bearer sk-carol' })).status,
    ).toBe(201);
    const again = await post('/api/messages', key, body, { authorization: 'bearer   sk-carol' });
    expect(again.headers.get('idempotent-replayed')).toBe('true');
  });
});
