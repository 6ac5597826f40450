import { createMemoryStore } from '@idem/store-memory';
import { describe, expect, it } from 'vitest';
import { type HttpIdempotencyOptions, withIdempotency } from '../src/index.js';

// Stored records are found by the storage key a request derives, and a retry is told from a
// reuse by its fingerprint: both must stay what they were when the records were written. The
// pairs below were computed by the code as it was before it was made faster (commit
// a4b6a3b); a change to any of them is a change of the stored format.
async function derived(
  request: Request,
  options: Partial<HttpIdempotencyOptions> = {},
): Promise<[string, string]> {
  const store = createMemoryStore();
  let storageKey = '';
  const fetchLike = withIdempotency(
    async (_request, context) => {
      storageKey = context?.storageKey ?? '';
      return new Response('ok');
    },
    { store, scope: 'global', onWarning: () => {}, ...options },
  );
  expect((await fetchLike(request)).status).toBe(200);
  const record = await store.get(storageKey);
  return [storageKey, record?.fingerprint ?? ''];
}

const post = (url: string, headers: Record<string, string>, body?: string) =>
  new Request(url, { method: 'POST', headers: { 'idempotency-key': 'k-1', ...headers }, body });

describe('@idem/http derives the storage keys and fingerprints it always did', () => {
  it('for a JSON body, with a query', async () => {
    expect(
      await derived(
        post(
          'http://api.test/charges?b=2&a=1',
          { 'content-type': 'application/json; charset=utf-8' },
          '{ "b": [1, 2.50, -0], "a": {"x": "\\u00e9", "y": null}, "big": 1e21 }',
        ),
      ),
    ).toMatchInlineSnapshot(`
      [
        "9b42504c987e592f8927712db96e8c71b6285393b32c6f17beb5a4c4bec443dd",
        "c5da8f333c0c5c9f303bcc6a29e91b9dd4c813a953761446f08da02c1bab9c8f",
      ]
    `);
  });

  it('for bytes, for no body, for JSON that parses ambiguously', async () => {
    expect(
      await derived(post('http://api.test/notes', { 'content-type': 'text/plain' }, 'héllo')),
    ).toMatchInlineSnapshot(`
      [
        "133fcaca557a5687287abb2b4fadc82a612ab57172ec028a02c1c8d547cb0b0c",
        "a250c439175c435d91f51b5a77779fde3cf8f9d8425c92f12302749cc36b0737",
      ]
    `);
    expect(await derived(post('http://api.test/ping', {}))).toMatchInlineSnapshot(`
      [
        "5be932bfbf2d89a56ec236b850849ea583005fc2b4916182f119bef94cf93fb5",
        "d97841b50e3e88b07aea5bb693f8d12315373c910e75713abe9d36fecaed3917",
      ]
    `);
    expect(
      await derived(
        post(
          'http://api.test/n',
          { 'content-type': 'application/json' },
          '{"n":12345678901234567890}',
        ),
      ),
    ).toMatchInlineSnapshot(`
      [
        "d4845aef1875dcc280e0c21793567db0e5d16c9c46d66645159816ae0ab9a0f5",
        "d2ed34217c21f4aa4a42ced31d478d156ed9e0df67b31772a04fd25e1431670b",
      ]
    `);
  });

  it('for a scope hook, chosen headers and excluded fields', async () => {
    expect(
      await derived(
        post(
          'http://api.test/v2/charges/?x',
          {
            'content-type': 'application/merge-patch+json',
            'x-api-version': '7',
            'x-tenant': 't1',
          },
          '{"amount":1,"ts":99,"meta":{"trace":"t","keep":true}}',
        ),
        {
          scope: (request) => ({
            principal: { tenant: request.headers.get('x-tenant') ?? '' },
            operation: 'charge',
          }),
          fingerprint: { headers: ['X-Api-Version'], exclude: ['ts', 'meta.trace'], query: false },
        },
      ),
    ).toMatchInlineSnapshot(`
      [
        "b608e3508c818a57a192af9012a1d3f163a88efe29bd2f77d171d3bb71d61d7c",
        "2fd37f1ee410fe8130a2d68dccd15d0001b52680b780848656ef1dfa68c0507b",
      ]
    `);
  });
});
