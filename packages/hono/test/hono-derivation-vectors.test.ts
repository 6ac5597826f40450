import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import { createMemoryStore } from '@idem/store-memory';
import { Hono } from 'hono';
import { describe, expect, it } from 'vitest';
import { type IdempotencyVariables, idempotency } from '../src/index.js';

// Stored records are found by the storage key a request derives, and a retry is told from a
// reuse by its fingerprint: both must stay what they were when the records were written. The
// pairs below were computed by the code as it was before it was made faster (commit a4b6a3b).
// Through `app.request` (the Web path: the body read from a clone) and through
// @hono/node-server (the body read from the Node request and put back): the same pairs.
async function derived(
  path: string,
  headers: Record<string, string>,
  body?: string,
  via: 'app.request' | 'node-server' = 'app.request',
): Promise<[string, string]> {
  const store = createMemoryStore();
  const app = new Hono<{ Variables: IdempotencyVariables }>();
  app.use(idempotency({ store, scope: (c) => ({ principal: c.req.header('x-tenant') ?? 't' }) }));
  let storageKey = '';
  app.post('/*', async (c) => {
    storageKey = c.get('idempotency')?.storageKey ?? '';
    // The handler still gets the whole body, read straight from the raw request.
    return c.json({ body: await c.req.raw.text() }, 201);
  });
  const init = { method: 'POST', headers: { 'idempotency-key': 'k-1', ...headers }, body };
  let response: Response;
  if (via === 'app.request') {
    response = await app.request(path, init);
  } else {
    const server = await new Promise<ReturnType<typeof serve>>((resolve) => {
      const started = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () =>
        resolve(started),
      );
    });
    try {
      const { port } = server.address() as AddressInfo;
      response = await fetch(`http://127.0.0.1:${port}${path}`, init);
      await response.clone().text();
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  }
  expect(response.status).toBe(201);
  expect(await response.json()).toEqual({ body: body ?? '' });
  return [storageKey, (await store.get(storageKey))?.fingerprint ?? ''];
}

describe.each(['app.request', 'node-server'] as const)(
  '@idem/hono derives the storage keys and fingerprints it always did (%s)',
  (via) => {
    it('for JSON, text and no body', async () => {
      expect([
        await derived(
          '/charges?b=2&a=1',
          { 'content-type': 'application/json' },
          '{ "b": [1, 2.50, -0], "a": {"x": "\\u00e9", "y": null}, "big": 1e21 }',
          via,
        ),
        await derived('/notes', { 'content-type': 'text/plain', 'x-tenant': 't2' }, 'héllo', via),
        await derived('/Ping/', {}, undefined, via),
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
  },
);
