import { IdemError, InvalidInputError, isIdemError } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import Fastify from 'fastify';
import { describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// corerev: the plugin's own option refusals (`bodyTimeoutMs`, a route's `config.idempotency`)
// were plain TypeErrors, while every other bad option of the plugin (those of @idem/http) is
// an InvalidInputError (INVALID_INPUT). They are now typed too, and still TypeErrors.

/** `error` is INVALID_INPUT, an IdemError and InvalidInputError, and still a TypeError. */
function expectTypedTypeError(error: unknown, label: string) {
  expect(error, label).toBeInstanceOf(TypeError);
  expect(error, label).toBeInstanceOf(InvalidInputError);
  expect(error, label).toBeInstanceOf(IdemError);
  expect(isIdemError(error, 'INVALID_INPUT'), label).toBe(true);
  expect((error as Error).name, label).toBe('TypeError');
}

const store = () => createMemoryStore();

describe('corerev: @idem/fastify option refusals are typed', () => {
  it('a bad plugin bodyTimeoutMs fails registration with INVALID_INPUT, still a TypeError', async () => {
    for (const bodyTimeoutMs of [-1, 0, Number.NaN, 2 ** 31, '5']) {
      const app = Fastify();
      app.register(idempotency, { store: store(), scope: 'global', bodyTimeoutMs } as never);
      const error = await app.ready().then(
        () => undefined,
        (caught: unknown) => caught,
      );
      expectTypedTypeError(error, String(bodyTimeoutMs));
      expect((error as Error).message).toMatch(/bodyTimeoutMs must be a positive/);
      await app.close().catch(() => {});
    }
  });

  it("a route's bad config.idempotency fails app.ready() with INVALID_INPUT naming the route, the refusal as cause", async () => {
    for (const [label, config] of [
      ['bodyTimeoutMs', { idempotency: { bodyTimeoutMs: -1 } }],
      ['not an object', { idempotency: 'yes' }],
    ] as const) {
      const app = Fastify();
      await app.register(idempotency, { store: store(), scope: 'global' });
      app.post('/r', { config: config as never }, async () => ({ ok: true }));
      const error = await app.ready().then(
        () => undefined,
        (caught: unknown) => caught,
      );
      expectTypedTypeError(error, label);
      expect((error as Error).message, label).toMatch(/^@idem\/fastify, route POST \/r: /);
      expectTypedTypeError((error as Error).cause, `${label} (cause)`);
      await app.close().catch(() => {});
    }
  });
});
