import { createMemoryStore } from '@idem/store-memory';
import { describe, expect, it } from 'vitest';
import {
  answeredOutsideOf,
  bodyFromBytes,
  createIdempotencyHandler,
  type ResponseRecorder,
} from '../src/index.js';

// nesthono32: the recorder's internal ANSWERED_OUTSIDE entry, by which Hono (no readable
// response: the marker at once) and Nest (its held `finish`: the marker instead of a release for
// a response that is not final, a final one recorded as usual) report a handler that ran to its
// end after an answer from outside the adapter.

function setup() {
  const warnings: string[] = [];
  const handler = createIdempotencyHandler<null>({
    store: createMemoryStore(),
    scope: 'global',
    leaseMs: 1_000,
    onWarning: (message) => warnings.push(message),
  });
  const begin = () =>
    handler.begin({
      native: null,
      method: 'POST',
      url: '/charges',
      header: (name) => (name === 'idempotency-key' ? 'entry-1' : undefined),
      readBody: async () => bodyFromBytes(new Uint8Array(), null),
    });
  const recorderOf = async (): Promise<ResponseRecorder> => {
    const first = await begin();
    if (first.action !== 'execute') throw new Error(`expected to execute, got ${first.action}`);
    return first.recorder;
  };
  const retried = async () => {
    const retry = await begin();
    if (retry.action !== 'respond') return { status: 0, type: retry.action };
    const type = retry.response.headers.get('content-type')?.startsWith('application/problem')
      ? ((await retry.response.json()) as { type: string }).type
      : undefined;
    return { status: retry.response.status, type };
  };
  return { recorderOf, retried, warnings };
}

const MARKED = { status: 500, type: 'https://idem.dev/problems/outcome-not-recorded' };

describe('ANSWERED_OUTSIDE', () => {
  it('with no response started: the marker at once, with the status that went out in the warning', async () => {
    const { recorderOf, retried, warnings } = setup();
    const recorder = await recorderOf();
    const mark = answeredOutsideOf(recorder);
    expect(mark).toBeTypeOf('function');
    await mark?.(504);
    expect(await retried()).toEqual(MARKED);
    expect(warnings.some((w) => w.startsWith('The 504 response'))).toBe(true);
    // The recorder ended: a later finish or fail changes nothing.
    await recorder.fail(new Error('late'));
    expect(await retried()).toEqual(MARKED);
  });

  it('then finish of a response that is not final: the marker, not a release', async () => {
    const { recorderOf, retried } = setup();
    const recorder = await recorderOf();
    expect(recorder.start(408, new Headers())).toBe(false);
    expect(answeredOutsideOf(recorder)?.()).toBeUndefined();
    await recorder.finish();
    expect(await retried()).toEqual(MARKED);
  });

  it('then fail of the answer (it broke): the marker, not a release', async () => {
    const { recorderOf, retried } = setup();
    const recorder = await recorderOf();
    expect(recorder.start(503, new Headers())).toBe(false);
    answeredOutsideOf(recorder)?.();
    await recorder.fail(new Error('the client left mid-answer'));
    expect(await retried()).toEqual(MARKED);
  });

  it('then finish of a final response: recorded and replayed as usual', async () => {
    const { recorderOf, retried } = setup();
    const recorder = await recorderOf();
    expect(recorder.start(201, new Headers())).toBe(true);
    answeredOutsideOf(recorder)?.();
    await recorder.finish();
    expect(await retried()).toEqual({ status: 201, type: undefined });
  });

  it('without it, a response that is not final is released as before', async () => {
    const { recorderOf, retried } = setup();
    const recorder = await recorderOf();
    expect(recorder.start(408, new Headers())).toBe(false);
    await recorder.finish();
    expect(await retried()).toEqual({ status: 0, type: 'execute' });
  });
});
