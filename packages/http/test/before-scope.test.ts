import { describe, expect, it } from 'vitest';
import type { HttpIdempotencyOptions } from '../src/index.js';
import { decisionSummary, keyedRequest, scopeCountingHandler } from './support/decision-summary.js';

// An adapter whose framework refused a body past a lower limit of its own before begin() ran
// (Fastify's bodyLimit) answers beforeScope()'s decision first, then the 413: it must give
// begin()'s own answer for every request begin() answers before its scope hook, and undefined
// exactly for the requests begin() takes to the scope hook, without running that hook.

const keys = [undefined, 'k1', '"k1"', '', 'a,b', '"abc', 'a\\b', 'é', 'k'.repeat(256)];
const urls = ['/orders?x=1', 'http://a:99999/x', 'http://h/x', '//x'];

describe('IdempotencyHandler.beforeScope', () => {
  for (const [name, options] of [
    ['defaults', {}],
    [
      'key optional, other methods, other header',
      { required: false, methods: ['put'], headerName: 'X-Key' },
    ],
  ] as [string, Partial<HttpIdempotencyOptions<null>>][]) {
    it(`gives begin()'s answer before the scope hook, undefined where begin() runs the hook (${name})`, async () => {
      const { handler, scoped } = scopeCountingHandler(options);
      const header =
        (options as { headerName?: string }).headerName?.toLowerCase() ?? 'idempotency-key';
      let undecided = 0;
      for (const method of ['POST', 'PUT', 'get'])
        for (const key of keys)
          for (const url of urls) {
            const request = keyedRequest(method, url, header, key);
            const before = scoped();
            const early = handler.beforeScope(request);
            expect(scoped()).toBe(before);
            const begun = await handler.begin(request);
            const ranScope = scoped() > before;
            const where = { method, key, url };
            if (early === undefined) {
              undecided++;
              // begin() went on to the scope hook (which refused: 500).
              expect({ ...where, ranScope }).toEqual({ ...where, ranScope: true });
            } else {
              expect({ ...where, ranScope }).toEqual({ ...where, ranScope: false });
              expect({ ...where, early: await decisionSummary(early) }).toEqual({
                ...where,
                early: await decisionSummary(begun),
              });
            }
          }
      expect(undecided).toBeGreaterThan(0);
    });
  }
});
