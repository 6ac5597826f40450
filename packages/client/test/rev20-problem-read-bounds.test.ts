import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it, onTestFinished } from 'vitest';
import { latenessAround, sampleLoopLateness } from '../../../scripts/loop-lateness.js';
import {
  createIdempotentFetch,
  getIdempotencyInfo,
  IN_PROGRESS_PROBLEM_TYPE,
} from '../src/index.js';

/**
 * rev20 (mutation audit): the README bounds how much of a 409's (or an idem 500's) problem body
 * the client reads to learn its type: "from the first 16 KiB of the body at most, within the
 * attempt's time limit, the deadline and 5 s". No test failed when either bound was removed
 * (16 KiB raised to Infinity; 5 s raised to 10 min): every earlier test of a stalled problem
 * body set attemptTimeoutMs, which hid the 5 s bound, and none sent a problem body over 16 KiB.
 */

/** A loopback server whose every answer is written by `answer`; closed when the test ends. */
async function serve(
  answer: (res: ServerResponse) => void,
): Promise<{ url: string; hits: () => number }> {
  let hits = 0;
  const server: Server = createServer((req, res) => {
    hits++;
    req.resume();
    answer(res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  onTestFinished(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}/charges`, hits: () => hits };
}

const post = { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"a":1}' };

/** Resolves with the call's outcome, or with 'still waiting' after `ms`. */
function within<T>(call: Promise<T>, ms: number): Promise<T | 'still waiting'> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    call,
    new Promise<'still waiting'>((resolve) => {
      timer = setTimeout(() => resolve('still waiting'), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

describe('rev20 client: reading a problem body is bounded by default', () => {
  it('a 409 problem body past 16 KiB is not read further: the 409 comes back at once, its bytes whole', async () => {
    // 64 KiB of a problem body that opens as the in-progress type, then the body stalls: its
    // type cannot be known from the first 16 KiB, so the answer is the application's 409.
    const head = `{"type":"${IN_PROGRESS_PROBLEM_TYPE}","detail":"`;
    const filler = 'x'.repeat(64 * 1024);
    const server = await serve((res) => {
      res.writeHead(409, { 'content-type': 'application/problem+json' });
      res.write(head + filler); // and never ends
    });
    // No attemptTimeoutMs, no deadline: only the 16 KiB bound (and then 5 s) ends the read.
    const idemFetch = createIdempotentFetch({ sleep: async () => undefined });
    const started = performance.now();
    const response = await within(idemFetch(server.url, post), 8_000);
    const elapsed = performance.now() - started;
    expect(response).not.toBe('still waiting');
    if (response === 'still waiting') return;
    // At once: not after the 5 s read limit that a read without the 16 KiB bound ends at.
    expect(elapsed).toBeLessThan(2_500);
    expect(response.status).toBe(409);
    expect(server.hits()).toBe(1);
    expect(getIdempotencyInfo(response)?.attempts).toBe(1);
    // The caller reads the body from its first byte: what was peeked is handed on.
    const reader = (response.body as ReadableStream<Uint8Array>).getReader();
    const decoder = new TextDecoder();
    let text = '';
    for (let i = 0; i < 1_000 && text.length < head.length + filler.length; i++) {
      const { done, value } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
    }
    expect(text).toBe(head + filler);
    await reader.cancel();
  });

  it('a stalled problem body (409 in-progress, 500) without attemptTimeoutMs or deadline is read for 5 s at most', async () => {
    const stalled = (status: number, type: string) =>
      serve((res) => {
        res.writeHead(status, { 'content-type': 'application/problem+json' });
        res.write(`{"type":"${type}"`); // the first bytes, then nothing: never ends
      });
    const conflict = await stalled(409, IN_PROGRESS_PROBLEM_TYPE);
    const failure = await stalled(500, 'https://idem.dev/problems/outcome-not-recorded');
    // One attempt each: the bound under test is the read of the first answer's body.
    const idemFetch = createIdempotentFetch({ maxAttempts: 1, maxInProgressAttempts: 1 });
    sampleLoopLateness();
    const started = performance.now();
    // 20 s only to end a hang; the bound is judged below.
    const [a, b] = await Promise.all([
      within(idemFetch(conflict.url, post), 20_000),
      within(idemFetch(failure.url, post), 20_000),
    ]);
    const ended = performance.now();
    const elapsed = ended - started;
    expect(a).not.toBe('still waiting');
    expect(b).not.toBe('still waiting');
    if (a === 'still waiting' || b === 'still waiting') return;
    expect(elapsed).toBeGreaterThanOrEqual(4_500);
    // The 5 s limit and 1 s, less only the event loop's lateness that could have delayed the
    // limit's timer (CONTRIBUTING: time bounds under CI's load).
    expect(elapsed - latenessAround(started, ended, [5_000])).toBeLessThan(6_000);
    // The type could not be read: each answer goes back as it is, after one attempt.
    expect(a.status).toBe(409);
    expect(b.status).toBe(500);
    expect(conflict.hits()).toBe(1);
    expect(failure.hits()).toBe(1);
    await Promise.all([a.body?.cancel(), b.body?.cancel()]);
  }, 30_000);
});
