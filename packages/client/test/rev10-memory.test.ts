// Review round 10 (rev10a): what calls with one long-lived caller signal leave alive, against a
// real node:http server on loopback. Findings are `it.fails` (they state the correct behaviour).
//
// Counted, not weighed (ci34): the abort controllers, signals and weak references alive after
// full collections (v8.queryObjects), and the abort listeners on the caller's signal. The leak
// this was written for (Node 20's AbortSignal.any registered each call's composite signals on
// the long-lived signal, through a WeakRef each, and nothing removed them: ~107 B a call) keeps
// two or more such objects a call: a few hundred calls show it. The earlier heap-byte delta
// needed 2 × 25,000 calls (182 s in a loaded CI lane) to see 107 B a call through the noise.
// IDEM_CLIENT_MEMORY_CALLS sizes the run (500 by default; 20,000 for a long manual run).
import { getEventListeners } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { queryObjects } from 'node:v8';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { settledCount } from '../../../scripts/heap-count.js';
import { createIdempotentFetch } from '../src/index.js';
import { signalsAlive } from './heap-count.js';

const CALLS = Number(process.env.IDEM_CLIENT_MEMORY_CALLS ?? 500);

const server = createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    res.writeHead(201, { 'content-type': 'text/plain' });
    res.end('ok');
  });
});
let url = '';
beforeAll(async () => {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/charges`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

/** Abort controllers, abort signals and weak references alive. */
function alive(): number {
  return signalsAlive() + queryObjects(WeakRef, { format: 'count' });
}

const setValues = Set.prototype.values;
const mapEntries = Map.prototype.entries;

/**
 * Objects reachable from `root` through own properties (symbol-keyed included: Node keeps an
 * EventTarget's listeners and AbortSignal.any's dependants there) and Set and Map entries
 * (Node's internal Sets have no Set prototype: read through Set.prototype's own methods).
 * Functions are counted, not entered. Grows by one or more a call when each call registers
 * something on the long-lived signal and nothing removes it.
 */
function reachableFrom(root: object, cap = 200_000): number {
  const seen = new Set<object>([root]);
  const queue: object[] = [root];
  const visit = (value: unknown) => {
    if ((typeof value === 'object' && value !== null) || typeof value === 'function') {
      if (seen.has(value as object) || seen.size >= cap) return;
      seen.add(value as object);
      if (typeof value === 'object') queue.push(value as object);
    }
  };
  while (queue.length > 0) {
    const object = queue.pop() as object;
    for (const key of Reflect.ownKeys(object)) {
      const descriptor = Reflect.getOwnPropertyDescriptor(object, key);
      if (descriptor && 'value' in descriptor) visit(descriptor.value);
    }
    try {
      for (const value of setValues.call(object as Set<unknown>)) visit(value);
    } catch {}
    try {
      for (const [key, value] of mapEntries.call(object as Map<unknown, unknown>)) {
        visit(key);
        visit(value);
      }
    } catch {}
  }
  return seen.size;
}

/** Objects of those kinds that `calls` POSTs made with `signal` (or none) left alive. */
async function liveAfter(calls: number, signal: AbortSignal | undefined): Promise<number> {
  const idemFetch = createIdempotentFetch({ attemptTimeoutMs: 10_000, deadlineMs: 60_000 });
  const call = async () => {
    const response = await idemFetch(url, {
      method: 'POST',
      body: 'x',
      ...(signal ? { signal } : {}),
    });
    await response.text();
  };
  for (let i = 0; i < 200; i++) await call(); // warm-up: connection pool, JIT
  const before = await settledCount(alive);
  for (let i = 0; i < calls; i++) await call();
  return (await settledCount(alive, { atMost: before })) - before;
}

describe('rev10a client: memory with a long-lived caller signal', () => {
  // FIXED (was FINDING MEDIUM): every call made with one long-lived caller signal (an app-wide shutdown signal) leaves ~100 bytes on the heap for good (observed on Node 20.20: AbortSignal.any registers each composite from boundSignal, twice per call, with the source signal, and nothing removes it): memory grows without bound with the number of calls.
  it('calls with one long-lived signal leave no more abort controllers, signals or weak references alive than calls without one', async () => {
    const without = await liveAfter(CALLS, undefined);
    const shutdown = new AbortController();
    const heldBefore = reachableFrom(shutdown.signal);
    const withSignal = await liveAfter(CALLS, shutdown.signal);
    const held = reachableFrom(shutdown.signal) - heldBefore;
    const listeners = getEventListeners(shutdown.signal, 'abort').length;
    // Expected: none a call, with the signal as without. Checked (Node 20.20): with follow()
    // put back to AbortSignal.any (the rev10a leak), the signal holds what it reaches of each
    // call's composites (a WeakRef each in its dependants; Node's own WeakRefs are not counted
    // by queryObjects): `held` 1,401 for 500 calls; with follow()'s forget a no-op, 1,996
    // controllers and signals more alive for 500 calls. Both fail. A quarter of one a call is
    // the bound.
    expect(held, JSON.stringify({ calls: CALLS, held })).toBeLessThan(CALLS / 4);
    expect(withSignal, JSON.stringify({ calls: CALLS, without, withSignal })).toBeLessThan(
      Math.max(without, 0) + CALLS / 4,
    );
    // One listener on the caller's signal for all calls (follow()'s), none a call.
    expect(listeners).toBeLessThanOrEqual(1);
  }, 120_000);
});
