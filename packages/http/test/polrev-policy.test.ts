import { InvalidInputError } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import { describe, expect, it } from 'vitest';
import { createIdempotencyHandler, REPLAYED_HEADER, type ResponsePolicy } from '../src/index.js';
import { post } from './web-requests.js';

// Adversarial review (polrev) of the outcome policy after 9528cec8, on the HTTP recorder
// (begin / recordResponse records the response itself): a policy that answers a Promise.

/** Rejections nobody handled (an async policy's rejection ends a process). */
const unhandled: unknown[] = [];
process.on('unhandledRejection', (reason) => unhandled.push(reason));

describe('an HTTP outcome policy that answers a Promise', () => {
  it('an async isFinal is refused when the handler is made', () => {
    expect(() =>
      createIdempotencyHandler({
        store: createMemoryStore(),
        scope: 'global',
        isFinal: (async () => true) as never,
      }),
    ).toThrow(InvalidInputError);
  });

  // FINDING (MEDIUM, fixed): the recorder took a Promise for "final" without a word, and a
  // rejecting one went unhandled (the default Node settings end the process). It is now a
  // policy fault, as a throw: the response is recorded (the handler never runs twice), its
  // client gets it as written, onWarning gets the fault, and the rejection is handled.
  it('a rejected Promise of a 503: recorded once as a throwing policy is, the fault reported, nothing unhandled', async () => {
    const warnings: string[] = [];
    const policy: ResponsePolicy = () => Promise.reject(new Error('async policy')) as never;
    const handler = createIdempotencyHandler({
      store: createMemoryStore(),
      scope: 'global',
      isFinal: policy,
      onWarning: (message) => warnings.push(message),
    });
    let runs = 0;
    const app = async () => {
      runs++;
      return new Response('busy', { status: 503 });
    };
    const first = await handler.handle(post('k'), app);
    expect(first.status).toBe(503);
    expect(await first.text()).toBe('busy');
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain('isFinal');
    expect(warnings[0]).toContain('Promise');
    const retry = await handler.handle(post('k'), app);
    expect(retry.headers.get(REPLAYED_HEADER)).toBe('true');
    expect(retry.status).toBe(503);
    expect(runs).toBe(1);
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(unhandled).toEqual([]);
  });

  it('a non-boolean answer is read by its truthiness (0 releases, 1 keeps), as core reads it', async () => {
    for (const [answer, replayed] of [
      [0, false],
      [1, true],
    ] as const) {
      const handler = createIdempotencyHandler({
        store: createMemoryStore(),
        scope: 'global',
        isFinal: () => answer as never,
        onWarning: () => {},
      });
      let runs = 0;
      const app = async () => {
        runs++;
        return new Response('ok', { status: 201 });
      };
      await (await handler.handle(post('k'), app)).text();
      const second = await handler.handle(post('k'), app);
      expect(second.headers.get(REPLAYED_HEADER) === 'true').toBe(replayed);
      expect(runs).toBe(replayed ? 1 : 2);
    }
  });
});
