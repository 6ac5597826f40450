import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { createIdempotentFetch } from '../src/index.js';

// rev11: stream-resume.ts cancel() during a resume (rev10). The body is cancelled while the
// resume request is waiting for its answer: the resume must not keep running (its
// connection open, its retries going) after the caller said it wants no more of the stream.

const servers: Server[] = [];
afterEach(async () => {
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

async function start(resumeAnswer: 'hang' | '503') {
  const resumes: { req: IncomingMessage; closedAt?: number }[] = [];
  const server = createServer((req, res) => {
    req.resume();
    if (req.headers['last-event-id'] === undefined) {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'idempotent-generation': 'g1' });
      res.write('id: 1\ndata: a\n\n');
      setTimeout(() => res.socket?.destroy(), 50); // the stream breaks: the client resumes
      return;
    }
    const entry: { req: IncomingMessage; closedAt?: number } = { req };
    resumes.push(entry);
    res.on('close', () => {
      entry.closedAt = performance.now();
    });
    if (resumeAnswer === '503') {
      res.writeHead(503, { 'retry-after': '1', 'content-type': 'text/plain' });
      res.end('busy');
    }
    // 'hang': never answered.
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/s`, resumes };
}

async function cancelDuringResume(url: string, resumes: unknown[], signal?: AbortSignal) {
  const idemFetch = createIdempotentFetch({ resumeStreams: { maxResumes: 3 } });
  const response = await idemFetch(url, {
    method: 'POST',
    body: '{}',
    headers: { 'content-type': 'application/json' },
    ...(signal ? { signal } : {}),
  });
  const reader = (response.body as ReadableStream<Uint8Array>).getReader();
  await reader.read();
  const pending = reader.read().catch(() => undefined);
  const deadline = Date.now() + 3_000;
  while (Date.now() < deadline && resumes.length === 0) await sleep(10);
  expect(resumes.length).toBe(1);
  const cancelledAt = performance.now();
  await reader.cancel(new Error('no more'));
  // The cancel settles at once: it does not wait for the resume's answer.
  expect(performance.now() - cancelledAt).toBeLessThan(1_000);
  expect(await pending).toEqual({ done: true, value: undefined });
  return cancelledAt;
}

describe('rev11 client: cancel while a stream resume is under way', () => {
  // FIXED (was FINDING LOW): cancelling a resumable body while its resume request waits for an answer left that request running (its connection open until the server answers, which may be never: attemptTimeoutMs is unbounded by default); the cancel now aborts it
  it('a resume the server never answers is aborted by the cancel (its connection closed)', async () => {
    const { url, resumes } = await start('hang');
    const cancelledAt = await cancelDuringResume(url, resumes);
    const deadline = Date.now() + 1_500;
    while (Date.now() < deadline && resumes[0]?.closedAt === undefined) await sleep(20);
    expect(resumes[0]?.closedAt).toBeGreaterThanOrEqual(cancelledAt);
  });

  // FIXED (was FINDING LOW): after the cancel, a resume answered 503 was retried (new requests with the key) although the body was cancelled
  it('a resume answered 503 is not retried once the body is cancelled', async () => {
    const { url, resumes } = await start('503');
    await cancelDuringResume(url, resumes);
    await sleep(2_500);
    expect(resumes.length).toBe(1);
  });

  it('with a caller signal too, the cancel aborts the resume; the signal still works for other calls', async () => {
    const { url, resumes } = await start('hang');
    const caller = new AbortController();
    const cancelledAt = await cancelDuringResume(url, resumes, caller.signal);
    const deadline = Date.now() + 1_500;
    while (Date.now() < deadline && resumes[0]?.closedAt === undefined) await sleep(20);
    expect(resumes[0]?.closedAt).toBeGreaterThanOrEqual(cancelledAt);
    expect(caller.signal.aborted).toBe(false);
  });

  it("the caller's abort still ends a resume under way (its connection closed, the read rejects with the reason)", async () => {
    const { url, resumes } = await start('hang');
    const caller = new AbortController();
    const idemFetch = createIdempotentFetch({ resumeStreams: { maxResumes: 3 } });
    const response = await idemFetch(url, {
      method: 'POST',
      body: '{}',
      headers: { 'content-type': 'application/json' },
      signal: caller.signal,
    });
    const reader = (response.body as ReadableStream<Uint8Array>).getReader();
    await reader.read();
    const pending = reader.read().then(
      () => 'resolved',
      (error: unknown) => error,
    );
    const deadline = Date.now() + 3_000;
    while (Date.now() < deadline && resumes.length === 0) await sleep(10);
    expect(resumes.length).toBe(1);
    const reason = new Error('caller stops');
    const abortedAt = performance.now();
    caller.abort(reason);
    expect(await pending).toBe(reason);
    expect(performance.now() - abortedAt).toBeLessThan(1_000);
    const closeBy = Date.now() + 1_500;
    while (Date.now() < closeBy && resumes[0]?.closedAt === undefined) await sleep(20);
    expect(resumes[0]?.closedAt).toBeGreaterThanOrEqual(abortedAt);
  });
});
