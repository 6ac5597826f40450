// An `onWarning` listener's rejection is ignored whatever promise it answers (break32b's
// finding, in @idem/http): an async listener made in another realm (a `vm` context, a sandbox,
// another test environment) answers a promise that is not this realm's `Promise`; the old
// `instanceof Promise` check let its rejection go unhandled, and by default Node ends the
// process on the first one. A thenable whose `then` throws is ignored too.
import vm from 'node:vm';
import { createMemoryStore } from '@idem/store-memory';
import { unhandledRejections } from '@idem/test-ledger/unhandled';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createIdempotencyHandler, PROBLEM_TYPES } from '../src/index.js';

describe('an onWarning answering a foreign promise or a broken thenable', () => {
  // Only this file's listener, so that the old source's rejections are counted here.
  const rejections = unhandledRejections();
  beforeEach(rejections.start);
  afterEach(rejections.stop);

  const listeners: Array<[string, () => unknown]> = [
    [
      'an async listener from a vm context',
      vm.runInContext(
        '(async (message) => { throw new Error("foreign warning bug: " + message) })',
        vm.createContext({}),
      ) as () => unknown,
    ],
    [
      'a thenable that rejects',
      () => ({
        // biome-ignore lint/suspicious/noThenProperty: a thenable is what this test needs
        then(_ok: unknown, fail: (error: unknown) => void) {
          fail(new Error('thenable rejects'));
        },
      }),
    ],
    [
      'a thenable whose then getter throws',
      () =>
        Object.defineProperty({}, 'then', {
          get() {
            throw new Error('then getter throws');
          },
        }),
    ],
  ];

  for (const [name, onWarning] of listeners) {
    it(`${name}: the answer is unchanged and nothing goes unhandled`, async () => {
      let warned = 0;
      const handler = createIdempotencyHandler({
        store: createMemoryStore(),
        scope: () => ({ principal: '' }),
        onWarning: (message: string) => {
          warned++;
          return (onWarning as (message: string) => unknown)(message) as undefined;
        },
      });
      const answer = await handler.handle(
        new Request('http://api.test/x', { method: 'POST', headers: { 'idempotency-key': 'k' } }),
        async () => new Response('ran'),
      );
      expect(answer.status).toBe(500);
      expect(await answer.json()).toMatchObject({ type: PROBLEM_TYPES.noPrincipal });
      expect(warned).toBeGreaterThan(0);
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(rejections.seen).toEqual([]);
    });
  }
});
