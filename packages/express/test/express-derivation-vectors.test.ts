import type { IdempotencyStore } from '@idem/core';
import { listening } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { describe, expect, it } from 'vitest';
import { getIdempotency, idempotency } from '../src/index.js';

// Stored records are found by the storage key a request derives, and a retry is told from a
// reuse by its fingerprint: both must stay what they were when the records were written. The
// pairs below were computed by the code as it was before it was made faster (commit
// a4b6a3b), with the body read by the middleware and with a parser in front of it.
async function derived(
  parserFirst: boolean,
  path: string,
  headers: Record<string, string>,
  body?: string,
): Promise<[string, string]> {
  const store: IdempotencyStore = createMemoryStore();
  const app = express();
  if (parserFirst) app.use(express.json(), express.text());
  app.use(idempotency({ store, scope: (req) => ({ principal: req.get('x-tenant') ?? 't' }) }));
  let storageKey = '';
  app.post('/*path', (_req, res) => {
    storageKey = getIdempotency(res)?.storageKey ?? '';
    res.status(201).json({ ok: true });
  });
  const server = await listening(app.listen(0, '127.0.0.1'));
  try {
    const response = await fetch(`${server.url}${path}`, {
      method: 'POST',
      headers: { 'idempotency-key': 'k-1', ...headers },
      body,
    });
    expect(response.status).toBe(201);
  } finally {
    await server.close();
  }
  return [storageKey, (await store.get(storageKey))?.fingerprint ?? ''];
}

const json = { 'content-type': 'application/json' };
const jsonBody = '{ "b": [1, 2.50, -0], "a": {"x": "\\u00e9", "y": null}, "big": 1e21 }';

const all = async (parserFirst: boolean) => [
  await derived(parserFirst, '/charges?b=2&a=1', json, jsonBody),
  await derived(parserFirst, '/notes', { 'content-type': 'text/plain', 'x-tenant': 't2' }, 'héllo'),
  await derived(parserFirst, '/Ping/', {}),
];

describe('@idem/express derives the storage keys and fingerprints it always did', () => {
  it('for JSON, text and no body, read by the middleware or parsed first', async () => {
    const read = await all(false);
    expect(await all(true)).toEqual(read);
    expect(read).toMatchInlineSnapshot(`
      [
        [
          "29d9fc41d4ba26247b293c3c55c5d17e54464cb7cb4118c1c558c7f723483187",
          "c5da8f333c0c5c9f303bcc6a29e91b9dd4c813a953761446f08da02c1bab9c8f",
        ],
        [
          "d614e27f5ab1df1f72d6d6b5ec0a7b7fde9ba6cb290776837dca1c800416df20",
          "a250c439175c435d91f51b5a77779fde3cf8f9d8425c92f12302749cc36b0737",
        ],
        [
          "36332484bf993120df63de0bec8d6c673c326364235dee15028e51d0707e474d",
          "b1f082cb8e99ecb22eb8936d19ec3b00fabc8441d8daffde9436e40b28a197f1",
        ],
      ]
    `);
  });
});
