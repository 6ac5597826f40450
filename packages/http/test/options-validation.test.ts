import { createMemoryStore } from '@idem/store-memory';
import { describe, expect, it } from 'vitest';
import {
  createIdempotencyHandler,
  type HttpIdempotencyOptions,
  PROBLEM_TYPES,
} from '../src/index.js';

// Options out of range are refused with INVALID_INPUT when the handler is created. Found at
// request time, each one would be a bad answer to every request: `Retry-After: NaN`, a
// TypeError (500) from `Headers.get('')`, or a string 'false' read as failing open.

const invalid = expect.objectContaining({ code: 'INVALID_INPUT' });
const create = (options: Record<string, unknown>) =>
  createIdempotencyHandler({
    store: createMemoryStore(),
    scope: 'global',
    ...options,
  } as HttpIdempotencyOptions);

describe('createIdempotencyHandler refuses options out of range with INVALID_INPUT', () => {
  it.each<[string, Record<string, unknown>]>([
    ['inProgressRetryAfterSeconds NaN', { inProgressRetryAfterSeconds: Number.NaN }],
    ['inProgressRetryAfterSeconds Infinity', { inProgressRetryAfterSeconds: Infinity }],
    ['unavailableRetryAfterSeconds Infinity', { unavailableRetryAfterSeconds: Infinity }],
    ['unavailableRetryAfterSeconds negative', { unavailableRetryAfterSeconds: -3 }],
    ['unavailableRetryAfterSeconds a string', { unavailableRetryAfterSeconds: '5' }],
    ['an empty headerName', { headerName: '' }],
    ['a headerName that is no header name', { headerName: 'idempotency key' }],
    ['methods not an array', { methods: 'POST' }],
    ['a method that is not a string', { methods: [1] }],
    ['a method that is no token', { methods: ['PO ST'] }],
    ['failOpen a string', { failOpen: 'false' }],
    ['required a string', { required: 'false' }],
    ['fingerprint.headers with no header name', { fingerprint: { headers: ['bad header'] } }],
    ['fingerprint.exclude with an empty path', { fingerprint: { exclude: [''] } }],
    ['fingerprint.query a string', { fingerprint: { query: 'no' } }],
    ['fingerprint.extras not a function', { fingerprint: { extras: {} } }],
    ['isFinal not a function', { isFinal: 200 }],
    ['recordedHeaders with no header name', { recordedHeaders: ['content type'] }],
    ['onWarning not a function', { onWarning: 'warn' }],
  ])('%s', (_name, options) => {
    expect(() => create(options)).toThrow(invalid);
  });

  it('accepts the valid forms', () => {
    expect(() =>
      create({
        methods: ['post', 'PUT'],
        required: false,
        failOpen: false,
        headerName: 'X-Request-Key',
        inProgressRetryAfterSeconds: 0.5,
        unavailableRetryAfterSeconds: 30,
        fingerprint: { headers: ['x-api-version'], exclude: ['meta.trace'], query: false },
        recordedHeaders: ['content-type', 'x-charge-id'],
        onWarning: () => {},
      }),
    ).not.toThrow();
  });

  it('drain() refuses a wait that is not a finite, non-negative number of ms', async () => {
    await expect(create({}).drain(Number.NaN)).rejects.toEqual(invalid);
  });
});

describe('an onWarning that fails never changes an answer', () => {
  it('a throwing or rejecting onWarning leaves the no-principal 500 and an over-cap replay as they are', async () => {
    const seen: unknown[] = [];
    const listener = (reason: unknown) => seen.push(reason);
    process.on('unhandledRejection', listener);
    try {
      for (const onWarning of [
        () => {
          throw new Error('sync warning bug');
        },
        async () => {
          throw new Error('async warning bug');
        },
      ]) {
        const noPrincipal = createIdempotencyHandler({
          store: createMemoryStore(),
          scope: () => ({ principal: '' }),
          onWarning,
        });
        const request = new Request('http://api.test/x', {
          method: 'POST',
          headers: { 'idempotency-key': 'k' },
        });
        const answer = await noPrincipal.handle(request, async () => new Response('ran'));
        expect(answer.status).toBe(500);
        expect(await answer.json()).toMatchObject({ type: PROBLEM_TYPES.noPrincipal });

        const capped = createIdempotencyHandler({
          store: createMemoryStore(),
          scope: 'global',
          maxOutcomeBytes: 100,
          onWarning,
        });
        const big = () =>
          new Request('http://api.test/big', {
            method: 'POST',
            headers: { 'idempotency-key': 'b' },
          });
        const first = await capped.handle(big(), async () => new Response('x'.repeat(500)));
        expect((await first.text()).length).toBe(500);
        const retry = await capped.handle(big(), async () => new Response('ran again'));
        expect(await retry.json()).toMatchObject({ type: PROBLEM_TYPES.outcomeNotRecorded });
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    } finally {
      process.off('unhandledRejection', listener);
    }
    expect(seen).toEqual([]);
  });
});
