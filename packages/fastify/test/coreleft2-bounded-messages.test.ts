// coreleft2: a refused bodyTimeoutMs was shown with String(value): a huge string in full in the
// message. It is shown by core's shownInput now (a string quoted, its first 64 characters and
// its length).
import { createMemoryStore } from '@idem/store-memory';
import Fastify from 'fastify';
import { expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

it('a huge string as bodyTimeoutMs: a short message naming its length', async () => {
  const app = Fastify();
  app.register(idempotency, {
    store: createMemoryStore(),
    scope: 'global',
    bodyTimeoutMs: '7'.repeat(10_000_000),
  } as never);
  const error = (await app.ready().then(
    () => undefined,
    (caught: unknown) => caught,
  )) as Error;
  await app.close().catch(() => {});
  expect(error).toBeInstanceOf(TypeError);
  expect(error.message).toMatch(
    /^bodyTimeoutMs must be a positive.*; got "7{64}"… \(10000000 chars\)$/,
  );
  expect(error.message.length).toBeLessThan(400);
});
