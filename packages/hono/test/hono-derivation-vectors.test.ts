import { createMemoryStore } from '@idem/store-memory';
import { Hono } from 'hono';
import { describe, expect, it } from 'vitest';
import { type IdempotencyVariables, idempotency } from '../src/index.js';

// Stored records are found by the storage key a request derives, and a retry is told from a
// reuse by its fingerprint: both must stay what they were when the records were written. The
// pairs below were computed by the code as it was before it was made faster (commit a4b6a3b).
async function derived(
  path: string,
  headers: Record<string, string>,
  body?: string,
): Promise<[string, string]> {
  const store = createMemoryStore();
  const app = new Hono<{ Variables: IdempotencyVariables }>();
  app.use(idempotency({ store, scope: (c) => ({ principal: c.req.header('x-tenant') ?? 't' }) }));
  let storageKey = '';
  app.post('/*', (c) => {
    storageKey = c.get('idempotency')?.storageKey ?? '';
    return c.json({ ok: true }, 201);
  });
  const response = await app.request(path, {
    method: 'POST',
    headers: { 'idempotency-key': 'k-1', ...headers },
    body,
  });
  expect(response.status).toBe(201);
  return [storageKey, (await store.get(storageKey))?.fingerprint ?? ''];
}

describe('@idem/hono derives the storage keys and fingerprints it always did', () => {
  it('for JSON, text and no body', async () => {
    expect([
      await derived(
        '/charges?b=2&a=1',
        { 'content-type': 'application/json' },
        '{ "b": [1, 2.50, -0], "a": {"x": "\\u00e9", "y": null}, "big": 1e21 }',
      ),
      await derived('/notes', { 'content-type': 'text/plain', 'x-tenant': 't2' }, 'héllo'),
      await derived('/Ping/', {}),
    ]).toMatchInlineSnapshot(`
      [
        [
          "c85e1617c6a7cbf95b1cf9ebf35e1881559da75dd9e01abf449a0348c217226b",
          "c5da8f333c0c5c9f303bcc6a29e91b9dd4c813a953761446f08da02c1bab9c8f",
        ],
        [
          "e40a4b4eaf161c54aab253a4b3fd07999735657cac999c22ca263beea96f93e6",
          "a250c439175c435d91f51b5a77779fde3cf8f9d8425c92f12302749cc36b0737",
        ],
        [
          "c85e1617c6a7cbf95b1cf9ebf35e1881559da75dd9e01abf449a0348c217226b",
          "b1f082cb8e99ecb22eb8936d19ec3b00fabc8441d8daffde9436e40b28a197f1",
        ],
      ]
    `);
  });
});
