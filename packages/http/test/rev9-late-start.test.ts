/**
 * rev9: an adversarial review of `ResponseRecorder.lateStart()` (recorder.ts) and the runway
 * check in `@idem/http`. Real store (store-memory), real timers.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { createMemoryStore } from '@idem/store-memory';
import { describe, expect, it } from 'vitest';
import { createIdempotencyHandler, type IncomingRequest } from '../src/index.js';

function incoming(key: string): IncomingRequest<null> {
  return {
    native: null,
    method: 'POST',
    url: 'http://localhost/orders',
    header: (name) => (name.toLowerCase() === 'idempotency-key' ? key : undefined),
    readBody: async () => ({ kind: 'none' }),
  };
}

describe('rev9: lateStart() called once the handler has started', () => {
  // FINDING (LOW): `lateStart()` judges only `execution.pastRunway()`, i.e. "0.9 of the lease
  // since the acquire was SENT", which stays true forever once the handler has run that long,
  // even though heartbeats renewed the lease meanwhile. Called after the handler started
  // (after `recorder.start()`: the response is already being recorded; an adapter that judges
  // it in a hook that runs late, or twice), it gives the key back under the running handler:
  // the store record is released, a retry with the same key is answered `execute` and runs
  // the handler a second time, and the first handler's `finish()` then rejects with
  // INVALID_INPUT ("already completed or released"), so its outcome is never recorded.
  // Repro: lease 300 ms (heartbeats every 100 ms), begin, lateStart() -> undefined, the
  // handler runs 290 ms, start(200) + capture, lateStart() again -> a 503 decision, the key
  // released; a retry begins with action 'execute'. Suggested fix: the recorder knows the
  // handler started once start()/capture()/finish()/fail()/recordResponse() was called: a
  // lateStart() after that must not touch the execution (throw a typed misuse error, or
  // answer undefined) — only the execution's lease signal decides then.
  it('after start(): the key is not given back under the running handler; a retry is not executed', async () => {
    const store = createMemoryStore();
    const handler = createIdempotencyHandler<null>({
      scope: 'global',
      store,
      leaseMs: 300,
      storeTimeoutMs: 1_000,
      onWarning: () => {},
    });
    const first = await handler.begin(incoming('k1'));
    if (first.action !== 'execute') throw new Error(`not executed: ${first.action}`);
    const { recorder } = first;
    expect(recorder.lateStart()).toBeUndefined();
    // The handler runs (heartbeats renew the lease) and starts its response.
    await sleep(290);
    recorder.start(200, new Headers({ 'content-type': 'text/plain' }));
    recorder.capture(new TextEncoder().encode('first'));
    // Misuse: judged again once the handler has started.
    const late = recorder.lateStart();
    await late?.catch(() => {});
    // A retry of the same key while the first handler still runs.
    const retry = await handler.begin(incoming('k1'));
    const retryAction = retry.action;
    if (retry.action === 'execute') await retry.recorder.fail(undefined);
    const finished = await recorder.finish().then(
      () => 'recorded',
      (e: unknown) => (e as { code?: string }).code ?? String(e),
    );
    await handler.drain(1_000);
    // The damage: the key given back under the running handler, a second execution, and the
    // first outcome never recorded.
    expect({ retryAction, finished }).toEqual({ retryAction: 'respond', finished: 'recorded' });
  });
});
