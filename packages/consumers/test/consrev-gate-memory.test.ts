// consrev: a message's gate tracks every acquisition its store-outage wait sends (one every
// 50 ms at least, for up to `max(leaseMs, retryDelayMs)`: 72,000 in an hour's outage with a
// long lease). Each settled one must leave nothing behind: before the fix each kept a race
// (and its reaction on the gate's "started" promise, which never settles for a message that
// does not run) until the message was done, a few hundred bytes an acquisition.
//
// Counted, not weighed (ci34): the promises alive after full collections (v8.queryObjects). A
// race kept per acquisition is one promise or more an acquisition; 10,000 acquisitions show it
// (the heap delta needed 200,000, 117 s in a loaded CI lane).
// IDEM_CONSUMERS_GATE_ACQUISITIONS sizes the run (10,000 by default).
import { describe, expect, it } from 'vitest';
import { HandlerGates } from '../src/handler-gate.js';
import { promisesAlive } from './heap.js';

const ACQUISITIONS = Number(process.env.IDEM_CONSUMERS_GATE_ACQUISITIONS ?? 10_000);

describe('consrev: HandlerGates memory', () => {
  it('settled acquisitions of a message whose handler has not started are not retained', async () => {
    const gates = new HandlerGates();
    const gate = gates.open();
    // Warm-up: what the gate and the event loop allocate once is not counted.
    for (let i = 0; i < 100; i++) gate.track(Promise.resolve());
    await gates.idle();
    const before = await promisesAlive();
    for (let i = 0; i < ACQUISITIONS; i++) gate.track(Promise.resolve());
    await gates.idle();
    expect(gate.pending()).toBeUndefined();
    const kept = (await promisesAlive(before)) - before;
    // Checked (Node 20.20): with track() racing each acquisition against a "started" promise
    // that never settles (the consrev leak, put back), every acquisition keeps its race: fails.
    // A quarter of one an acquisition is the bound.
    expect(kept, JSON.stringify({ acquisitions: ACQUISITIONS, kept })).toBeLessThan(
      ACQUISITIONS / 4,
    );
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
