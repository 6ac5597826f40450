import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { gc } from '../../../scripts/heap-count.js';
import { createIdempotentFetch } from '../src/index.js';

// rev11: `follow` (call-bounds.ts) now holds each joined signal only weakly from the caller's
// signal. Once `sendAttempt` returns, nothing of idem holds the attempt's joined signal: is the
// caller's abort still carried to a body being read after garbage collection?

const servers: Server[] = [];
const open: ServerResponse[] = [];
afterEach(async () => {
  for (const res of open.splice(0)) res.destroy();
  await Promise.all(
    servers.splice(0).map(
      (s) =>
        new Promise<void>((resolve) => {
          s.closeAllConnections();
          s.close(() => resolve());
        }),
    ),
  );
});

async function trickleServer(): Promise<string> {
  const server = createServer((req, res) => {
    req.resume();
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.write('first chunk');
    open.push(res); // never ends: the body is read until the caller aborts
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/t`;
}

async function collect(): Promise<void> {
  for (let i = 0; i < 6; i++) {
    gc();
    await new Promise((r) => setTimeout(r, 20));
  }
}

type FetchFn = typeof fetch;
async function abortReachesBody(
  method: string,
  callerSignalLivesOn: AbortController,
  wrapped?: FetchFn,
) {
  const url = await trickleServer();
  const idemFetch = createIdempotentFetch({
    maxAttempts: 1,
    ...(wrapped ? { fetch: wrapped } : {}),
  });
  const caller = callerSignalLivesOn;
  const response = await idemFetch(url, {
    method,
    ...(method === 'POST' ? { body: '{}', headers: { 'content-type': 'application/json' } } : {}),
    signal: caller.signal,
  });
  const reader = (response.body as ReadableStream<Uint8Array>).getReader();
  await reader.read();
  await collect();
  caller.abort(new Error('caller gave up'));
  return Promise.race([
    reader.read().then(
      () => 'read',
      () => 'rejected',
    ),
    new Promise((r) => setTimeout(() => r('hung'), 1_500)),
  ]);
}

describe('rev11 a caller abort reaches a body being read after GC', () => {
  it('GET (no key): the abort errors the body read after collections', async () => {
    expect(await abortReachesBody('GET', new AbortController())).toBe('rejected');
  });

  it('POST (keyed, resumable body): the abort errors the body read after collections', async () => {
    expect(await abortReachesBody('POST', new AbortController())).toBe('rejected');
  });

  // A fetch wrapper adding its own timeout the usual way: AbortSignal.any holds its sources
  // weakly, so the attempt's joined signal is held by nobody once the attempt has returned.
  const withTimeout: FetchFn = (input, init) =>
    fetch(input, {
      ...init,
      signal: AbortSignal.any([init?.signal as AbortSignal, AbortSignal.timeout(600_000)]),
    });
  // A wrapper that forwards the abort through its own controller.
  const forwarding: FetchFn = (input, init) => {
    const own = new AbortController();
    init?.signal?.addEventListener('abort', () => own.abort(init.signal?.reason));
    return fetch(input, { ...init, signal: own.signal });
  };

  // FIXED (was FINDING HIGH, a regression of rev10a: follow() held the joined signal weakly; it is now held until the body is collected): a caller's abort no longer reached a body being read through a fetch wrapper that joins the signal with AbortSignal.any (its own timeout): the attempt's joined signal, held only weakly by follow(), is collected
  it('GET through a wrapper with AbortSignal.any: the abort errors the body read after collections', async () => {
    expect(await abortReachesBody('GET', new AbortController(), withTimeout)).toBe('rejected');
  });

  it('POST (keyed) through a wrapper with AbortSignal.any: the abort errors the body read after collections', async () => {
    expect(await abortReachesBody('POST', new AbortController(), withTimeout)).toBe('rejected');
  });

  // FIXED (was FINDING HIGH): the same through a wrapper that forwards the abort with a listener on init.signal (nothing holds the joined signal)
  it('GET through a forwarding wrapper: the abort errors the body read after collections', async () => {
    expect(await abortReachesBody('GET', new AbortController(), forwarding)).toBe('rejected');
  });
});
