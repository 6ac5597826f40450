// consrev: a message's gate tracks every acquisition its store-outage wait sends (one every
// 50 ms at least, for up to `max(leaseMs, retryDelayMs)`: 72,000 in an hour's outage with a
// long lease). Each settled one must leave nothing behind: before the fix each kept a race
// (and its reaction on the gate's "started" promise, which never settles for a message that
// does not run) until the message was done, a few hundred bytes an acquisition.
import { describe, expect, it } from 'vitest';
import { HandlerGates } from '../src/handler-gate.js';
import { heapAfterGc } from './heap.js';

describe('consrev: HandlerGates memory', () => {
  it('settled acquisitions of a message whose handler has not started are not retained', async () => {
    const gates = new HandlerGates();
    const gate = gates.open();
    const before = await heapAfterGc();
    for (let i = 0; i < 200_000; i++) gate.track(Promise.resolve());
    await gates.idle();
    expect(gate.pending()).toBeUndefined();
    const grown = (await heapAfterGc()) - before;
    // About 40 MB before the fix; a few hundred kB of noise after it.
    expect(grown).toBeLessThan(8_000_000);
    // The gate still works: the next acquisition is tracked until the handler starts.
    let settle!: () => void;
    gate.track(new Promise<void>((resolve) => (settle = resolve)));
    expect(gate.pending()).toBeDefined();
    gate.started();
    await gates.idle();
    expect(gate.pending()).toBeUndefined();
    settle();
  });
});
