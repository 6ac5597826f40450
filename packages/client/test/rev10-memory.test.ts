// Review round 10 (rev10a): memory per call with a long-lived caller signal, against a real
// node:http server on loopback. Findings are `it.fails` (they state the correct behaviour).
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createIdempotentFetch } from '../src/index.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

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

async function settledHeap(): Promise<number> {
  for (let i = 0; i < 4; i++) {
    gc();
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return process.memoryUsage().heapUsed;
}

/** Heap bytes kept per call, over `calls` POSTs made with `signal` (or none). */
async function bytesPerCall(calls: number, signal: AbortSignal | undefined): Promise<number> {
  const idemFetch = createIdempotentFetch({ attemptTimeoutMs: 10_000, deadlineMs: 60_000 });
  const call = async () => {
    const response = await idemFetch(url, {
      method: 'POST',
      body: 'x',
      ...(signal ? { signal } : {}),
    });
    await response.text();
  };
  // Warm-up: connection pool, JIT. 5,000 calls: after 1,000, about 400 KB more came once
  // (the same at 20,000 and at 60,000 calls after it: 20 then 6.4 B a call with the signal),
  // which read as 20-25 B a call against the 25 B bound and failed a loaded CI lane once.
  for (let i = 0; i < 5_000; i++) await call();
  const before = await settledHeap();
  for (let i = 0; i < calls; i++) await call();
  return ((await settledHeap()) - before) / calls;
}

describe('rev10a client: memory with a long-lived caller signal', () => {
  // FIXED (was FINDING MEDIUM): every call made with one long-lived caller signal (an app-wide shutdown signal) leaves ~100 bytes on the heap for good (observed on Node 20.20: AbortSignal.any registers each composite from boundSignal, twice per call, with the source signal, and nothing removes it): memory grows without bound with the number of calls.
  it('20k calls with one long-lived signal keep no more heap than 20k calls without one', async () => {
    const calls = 20_000;
    const without = await bytesPerCall(calls, undefined);
    const shutdown = new AbortController();
    const withSignal = await bytesPerCall(calls, shutdown.signal);
    // Expected: no per-call growth beyond noise (a few bytes per call, as without a signal).
    // Before the fix (Node v20.20.2): without ≈ 0 B/call, with the signal ≈ 107 B/call, kept
    // after GC (12.8 MB for 120k calls in a standalone run).
    // (A run without the signal can come out below zero: the heap settled lower than after
    // the warm-up, as Node 24 does. Growth is judged against zero then.)
    expect(withSignal, JSON.stringify({ without, withSignal, node: process.version })).toBeLessThan(
      Math.max(without, 0) + 25,
    );
    // 29 s alone; more than 120 s once on CI, in its own process at the end of a loaded lane.
  }, 300_000);
});
