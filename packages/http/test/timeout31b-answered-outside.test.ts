import { createMemoryStore } from '@idem/store-memory';
import { describe, expect, it } from 'vitest';
import { bodyFromBytes, createIdempotencyHandler, type ResponseRecorder } from '../src/index.js';

// timeout31b FINDING (MEDIUM-HIGH, exactly-once; fixed): a response that is not final, sent
// while held handlers still ran (a request timeout mounted outside the adapter answered 503),
// kept the key until they settled and then RELEASED it, though they had run to their end: a
// retry ran the route a second time. Now, when every held handler was fulfilled, core's
// `answered_outside` not-recorded marker is written (retries get a 500 outcome-not-recorded
// problem, a warning goes to onWarning); when one of them rejected, the key is released.

const LEASE = 1_000;

function setup() {
  const warnings: string[] = [];
  const handler = createIdempotencyHandler<null>({
    store: createMemoryStore(),
    scope: 'global',
    leaseMs: LEASE,
    onWarning: (message) => warnings.push(message),
  });
  const begin = () =>
    handler.begin({
      native: null,
      method: 'POST',
      url: '/charges',
      header: (name) => (name === 'idempotency-key' ? 'outside-1' : undefined),
      readBody: async () => bodyFromBytes(new Uint8Array(), null),
    });
  return { begin, warnings };
}

function deferred() {
  let resolve!: () => void;
  let reject!: (error: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Two held handlers; an outer 503 ends the response while both run. */
async function answeredWhileHeld(begin: ReturnType<typeof setup>['begin']) {
  const first = await begin();
  if (first.action !== 'execute') throw new Error(`expected to execute, got ${first.action}`);
  const recorder: ResponseRecorder = first.recorder;
  const a = deferred();
  const b = deferred();
  recorder.holdWhile(a.promise);
  recorder.holdWhile(b.promise);
  expect(recorder.start(503, new Headers({ 'content-type': 'text/plain' }))).toBe(false);
  recorder.capture(new TextEncoder().encode('timed out'));
  await recorder.finish();
  // The handlers run on past the turn the response ended in.
  await new Promise((resolve) => setTimeout(resolve, 20));
  expect((await begin()).action).toBe('respond');
  return { a, b };
}

const settledAll = () => new Promise((resolve) => setTimeout(resolve, 50));

describe('held handlers after an answer from outside idem', () => {
  it('all fulfilled: the answered_outside marker, a retry gets the 500 outcome-not-recorded problem', async () => {
    const { begin, warnings } = setup();
    const { a, b } = await answeredWhileHeld(begin);
    a.resolve();
    await settledAll();
    // One still runs: the key is held (409), not marked yet.
    const meanwhile = await begin();
    expect(meanwhile.action === 'respond' && meanwhile.response.status).toBe(409);
    b.resolve();
    await settledAll();
    const retry = await begin();
    if (retry.action !== 'respond') throw new Error(`expected a problem, got ${retry.action}`);
    expect(retry.response.status).toBe(500);
    const problem = (await retry.response.json()) as { type: string; detail: string };
    expect(problem.type).toBe('https://idem.dev/problems/outcome-not-recorded');
    expect(problem.detail).toContain('ran to its end');
    expect(problem.detail).toContain('outside the idempotency middleware');
    expect(warnings.some((w) => w.includes('answered outside the idempotency middleware'))).toBe(
      true,
    );
  });

  it('one rejected (even the first to settle): the key is released, a retry executes', async () => {
    const { begin } = setup();
    const { a, b } = await answeredWhileHeld(begin);
    a.reject(new Error('the charge failed'));
    await settledAll();
    b.resolve();
    await settledAll();
    const retry = await begin();
    expect(retry.action).toBe('execute');
    if (retry.action === 'execute') await retry.recorder.fail(new Error('done'));
  });
});
