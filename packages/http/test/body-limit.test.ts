import { createMemoryStore } from '@idem/store-memory';
import { describe, expect, it } from 'vitest';
import { createIdempotencyHandler, type HttpIdempotencyOptions } from '../src/index.js';

// An adapter that copies the body while its framework reads it (Fastify) asks bodyLimit
// whether begin() will read it, and how much of it: the answer must agree with what begin does.

type Case = { method: string; headers: Record<string, string> };
const cases: Case[] = [];
for (const method of ['POST', 'post', 'PATCH', 'PUT', 'GET', 'DELETE'])
  for (const headers of [
    {} as Record<string, string>,
    { 'idempotency-key': 'k1' },
    { 'x-key': 'k1' },
    { 'idempotency-key': '' },
  ])
    cases.push({ method, headers });

describe('IdempotencyHandler.bodyLimit', () => {
  for (const [name, options] of [
    ['defaults', {}],
    [
      'key optional, other methods, other header, other limit',
      {
        required: false,
        methods: ['put', 'DELETE'],
        headerName: 'X-Key',
        maxBodyBytes: 10,
      },
    ],
  ] as [string, Partial<HttpIdempotencyOptions<null>>][]) {
    it(`is the limit begin() reads the body with, undefined only when it reads none (${name})`, async () => {
      const handler = createIdempotencyHandler<null>({
        store: createMemoryStore(),
        scope: 'global',
        onWarning: () => {},
        ...options,
      });
      for (const { method, headers } of cases) {
        const header = (name: string) => headers[name.toLowerCase()];
        let read: number | undefined;
        await handler.begin({
          native: null,
          method,
          url: 'http://api.test/charges',
          header,
          readBody: async (limit) => {
            read = limit;
            return { kind: 'none' };
          },
        });
        const limit = handler.bodyLimit({ method, header });
        // Read: with that limit. Undefined: never read. (A limit for a request whose key then
        // turns out invalid only means a copy that is not used.)
        if (read !== undefined) expect([method, headers, limit]).toEqual([method, headers, read]);
        if (limit === undefined)
          expect([method, headers, read]).toEqual([method, headers, undefined]);
        else expect(limit).toBe(options.maxBodyBytes ?? 1_048_576);
      }
    });
  }
});
