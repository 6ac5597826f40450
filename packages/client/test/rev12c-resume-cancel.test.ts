/**
 * rev12c (adversarial review of 94a3db0): cancelling a resumable body aborts the resume under
 * way and stops further resumes. Real node:http servers on loopback. Findings are `it.fails`
 * (they state the correct behaviour); attacks that held are plain `it`.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { createMemoryLiveStreams } from '@idem/core';
import { withIdempotency } from '@idem/http';
import { createMemoryStore } from '@idem/store-memory';
import { afterEach, describe, expect, it } from 'vitest';
import { createIdempotentFetch } from '../src/index.js';

type ResumeMode =
  | { kind: 'hang' }
  | { kind: '503' }
  /** Answers 200 with `id: 2` after `delayMs`, then keeps the body open (never ends). */
  | { kind: 'answer-open'; delayMs: number }
  /** Answers 200 with the rest of the stream (`id: 2`, `id: 3`) after `delayMs`, and ends. */
  | { kind: 'answer-rest'; delayMs: number };

interface Seen {
  lastEventId: string | undefined;
  closedAt?: number;
  res: ServerResponse;
}

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

const FIRST = 'id: 1\ndata: a\n\n';
const REST = 'id: 2\ndata: b\n\nid: 3\ndata: c\n\n';

async function start(mode: ResumeMode) {
  const requests: Seen[] = [];
  const server = createServer((req: IncomingMessage, res) => {
    req.resume();
    const seen: Seen = { lastEventId: req.headers['last-event-id'] as string | undefined, res };
    requests.push(seen);
    res.on('close', () => {
      seen.closedAt = performance.now();
    });
    if (seen.lastEventId === undefined) {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'idempotent-generation': 'g1' });
      res.write(FIRST);
      setTimeout(() => res.socket?.destroy(), 30);
      return;
    }
    if (mode.kind === '503') {
      res.writeHead(503, { 'retry-after': '1', 'content-type': 'text/plain' });
      res.end('busy');
      return;
    }
    if (mode.kind === 'hang') return;
    setTimeout(() => {
      if (res.destroyed) return;
      res.writeHead(200, { 'content-type': 'text/event-stream', 'idempotent-generation': 'g1' });
      if (mode.kind === 'answer-rest') res.end(REST);
      else res.write('id: 2\ndata: b\n\n');
    }, mode.delayMs);
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/s`;
  const resumes = () => requests.filter((r) => r.lastEventId !== undefined);
  return { url, requests, resumes };
}

async function open(url: string, signal?: AbortSignal) {
  const idemFetch = createIdempotentFetch({ resumeStreams: { maxResumes: 3 } });
  return idemFetch(url, {
    method: 'POST',
    body: '{}',
    headers: { 'content-type': 'application/json' },
    ...(signal ? { signal } : {}),
  });
}

async function until(check: () => boolean, ms = 3_000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline && !check()) await sleep(10);
  return check();
}

const timeouts = () => process.getActiveResourcesInfo().filter((name) => name === 'Timeout').length;

describe('rev12c client: cancel against a resume under way', () => {
  it('held: a tee’d body — cancelling both branches aborts the resume; one branch alone does not', async () => {
    // Both branches cancelled: the resume's connection is closed.
    {
      const { url, resumes } = await start({ kind: 'hang' });
      const response = await open(url);
      const [a, b] = (response.body as ReadableStream<Uint8Array>).tee();
      const ra = a.getReader();
      const rb = b.getReader();
      await ra.read();
      const pending = rb
        .read()
        .then(() => rb.read())
        .catch(() => undefined);
      expect(await until(() => resumes().length === 1)).toBe(true);
      const at = performance.now();
      // A branch's cancel settles once both branches are cancelled (the source's cancel).
      await Promise.all([ra.cancel(new Error('a')), rb.cancel(new Error('b'))]);
      expect(performance.now() - at).toBeLessThan(1_000);
      await pending;
      expect(await until(() => resumes()[0]?.closedAt !== undefined, 1_500)).toBe(true);
      expect(resumes()[0]?.closedAt).toBeGreaterThanOrEqual(at);
    }
    // One branch cancelled: the other still gets the whole stream.
    {
      const { url, resumes } = await start({ kind: 'answer-rest', delayMs: 200 });
      const response = await open(url);
      const [a, b] = (response.body as ReadableStream<Uint8Array>).tee();
      const text = new Response(b).text();
      const ra = a.getReader();
      await ra.read();
      const cancelled = ra.cancel(new Error('a only'));
      expect(await text).toBe(FIRST + REST);
      await cancelled;
      expect(resumes()).toHaveLength(1);
    }
  });

  it('held: reader.releaseLock() with a read pending, then body.cancel(): the resume is aborted', async () => {
    const { url, resumes } = await start({ kind: 'hang' });
    const response = await open(url);
    const body = response.body as ReadableStream<Uint8Array>;
    const reader = body.getReader();
    await reader.read();
    const pending = reader.read().catch((error: unknown) => error);
    expect(await until(() => resumes().length === 1)).toBe(true);
    reader.releaseLock();
    await pending; // rejected by releaseLock (a TypeError)
    const at = performance.now();
    await body.cancel(new Error('stop'));
    expect(performance.now() - at).toBeLessThan(1_000);
    expect(await until(() => resumes()[0]?.closedAt !== undefined, 1_500)).toBe(true);
    await sleep(300);
    expect(resumes()).toHaveLength(1);
  });

  it('held: a double cancel (two at once, then one more) settles at once, one resume, closed', async () => {
    const { url, resumes } = await start({ kind: 'hang' });
    const response = await open(url);
    const reader = (response.body as ReadableStream<Uint8Array>).getReader();
    await reader.read();
    const pending = reader.read().catch(() => undefined);
    expect(await until(() => resumes().length === 1)).toBe(true);
    const at = performance.now();
    await Promise.all([reader.cancel(new Error('one')), reader.cancel(new Error('two'))]);
    await reader.cancel(new Error('three'));
    await pending;
    expect(performance.now() - at).toBeLessThan(1_000);
    expect(await until(() => resumes()[0]?.closedAt !== undefined, 1_500)).toBe(true);
    await sleep(300);
    expect(resumes()).toHaveLength(1);
  });

  it('held: a cancel after the body ended (through a resume) sends nothing and settles', async () => {
    const { url, requests } = await start({ kind: 'answer-rest', delayMs: 10 });
    const response = await open(url);
    const body = response.body as ReadableStream<Uint8Array>;
    const reader = body.getReader();
    let text = '';
    const decoder = new TextDecoder();
    for (;;) {
      const read = await reader.read();
      if (read.done) break;
      text += decoder.decode(read.value, { stream: true });
    }
    expect(text).toBe(FIRST + REST);
    await reader.cancel(new Error('late'));
    reader.releaseLock();
    await body.cancel(new Error('later'));
    await sleep(200);
    expect(requests).toHaveLength(2);
  });

  it('held: a cancel racing the resume’s answer (at offsets around its arrival) closes the answered resume and sends no other', async () => {
    for (const offset of [-10, -2, 0, 2, 5, 15, 40]) {
      const delayMs = 60;
      const { url, resumes } = await start({ kind: 'answer-open', delayMs });
      const response = await open(url);
      const reader = (response.body as ReadableStream<Uint8Array>).getReader();
      await reader.read();
      const pending = reader.read().catch(() => undefined);
      expect(await until(() => resumes().length === 1)).toBe(true);
      await sleep(Math.max(0, delayMs + offset));
      const at = performance.now();
      await reader.cancel(new Error(`race ${offset}`));
      expect(performance.now() - at).toBeLessThan(1_000);
      await pending;
      // Whether the answer arrived before or after the cancel, its connection is closed.
      expect(
        await until(() => resumes()[0]?.closedAt !== undefined, 1_500),
        `offset ${offset}`,
      ).toBe(true);
      await sleep(100);
      expect(resumes(), `offset ${offset}`).toHaveLength(1);
    }
  });

  it('held: a cancel during a 503 backoff leaves no timer behind and sends no retry', async () => {
    const { url, resumes } = await start({ kind: '503' });
    const baseline = timeouts();
    const response = await open(url);
    const reader = (response.body as ReadableStream<Uint8Array>).getReader();
    await reader.read();
    const pending = reader.read().catch(() => undefined);
    expect(await until(() => resumes().length === 1)).toBe(true);
    await sleep(100); // the 503 is answered: the client sleeps 1 s (Retry-After)
    await reader.cancel(new Error('stop'));
    await pending;
    await sleep(50);
    expect(timeouts()).toBeLessThanOrEqual(baseline);
    await sleep(1_300);
    expect(resumes()).toHaveLength(1);
  });

  it('held: a caller signal that aborts after the cancel changes nothing (no throw, no request)', async () => {
    const { url, requests } = await start({ kind: 'hang' });
    const caller = new AbortController();
    const response = await open(url, caller.signal);
    const reader = (response.body as ReadableStream<Uint8Array>).getReader();
    await reader.read();
    const pending = reader.read().catch(() => undefined);
    expect(await until(() => requests.length === 2)).toBe(true);
    await reader.cancel(new Error('stop'));
    caller.abort(new Error('later'));
    await pending;
    await sleep(200);
    expect(requests).toHaveLength(2);
  });
});

describe('rev12c client: exactly once behind @idem/http (live stream, cancel during resume)', () => {
  it('held: cancels at many points of a resume never run the handler twice nor send a request without Last-Event-ID', async () => {
    let executions = 0;
    const encoder = new TextEncoder();
    const handle = withIdempotency(
      async () => {
        executions++;
        let n = 0;
        const body = new ReadableStream<Uint8Array>({
          async pull(controller) {
            if (n > 0) await sleep(40);
            controller.enqueue(encoder.encode(`id: é-${n}\ndata: ${n}\n\n`));
            if (++n === 6) controller.close();
          },
        });
        return new Response(body, { headers: { 'content-type': 'text/event-stream' } });
      },
      {
        store: createMemoryStore(),
        scope: 'global',
        onWarning: () => {},
        liveStreams: { channel: createMemoryLiveStreams(), anchorWaitMs: 1_000 },
      },
    );
    const sent: { key: string | undefined; lastEventId: string | undefined }[] = [];
    const server = createServer(async (req, res) => {
      const chunks: Buffer[] = [];
      for await (const chunk of req) chunks.push(chunk as Buffer);
      const headers = new Headers();
      for (const [name, value] of Object.entries(req.headers))
        if (typeof value === 'string') headers.set(name, value);
      const first = headers.get('last-event-id') === null;
      sent.push({
        key: headers.get('idempotency-key') ?? undefined,
        lastEventId: headers.get('last-event-id') ?? undefined,
      });
      const gone = new AbortController();
      res.on('close', () => gone.abort());
      const response = await handle(
        new Request(`http://127.0.0.1${req.url}`, {
          method: 'POST',
          headers,
          body: Buffer.concat(chunks),
          signal: gone.signal,
        }),
      );
      res.writeHead(response.status, Object.fromEntries(response.headers));
      const reader = (response.body as ReadableStream<Uint8Array>).getReader();
      let events = 0;
      try {
        for (;;) {
          const read = await reader.read();
          if (read.done) break;
          res.write(read.value);
          // The first connection breaks after two events (the handler runs on).
          if (first && ++events === 2) {
            res.socket?.destroy();
            await reader.cancel();
            return;
          }
        }
        res.end();
      } catch {
        res.destroy();
      }
    });
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/s`;
    const idemFetch = createIdempotentFetch({ resumeStreams: { maxResumes: 3 } });
    for (const cancelAfterMs of [0, 1, 3, 8, 20, 60]) {
      executions = 0;
      sent.length = 0;
      const response = await idemFetch(url, {
        method: 'POST',
        body: '{}',
        headers: { 'content-type': 'application/json' },
      });
      const reader = (response.body as ReadableStream<Uint8Array>).getReader();
      await reader.read();
      // Read until the resume is sent, then cancel a little after.
      const reading = (async () => {
        for (;;) {
          const read = await reader.read().catch(() => ({ done: true as const }));
          if (read.done) return;
        }
      })();
      expect(await until(() => sent.length >= 2, 2_000)).toBe(true);
      // The resume names the last event seen by its UTF-8 bytes.
      expect([0, 1].map((n) => Buffer.from(`é-${n}`, 'utf8').toString('latin1'))).toContain(
        sent[1]?.lastEventId,
      );
      await sleep(cancelAfterMs);
      await reader.cancel(new Error('enough'));
      await reading;
      await sleep(350); // the handler ends (6 events * 40 ms)
      expect(executions, `cancel +${cancelAfterMs} ms`).toBe(1);
      expect(new Set(sent.map((s) => s.key)).size).toBe(1);
      expect(sent.slice(1).every((s) => s.lastEventId !== undefined)).toBe(true);
      expect(sent.length).toBeLessThanOrEqual(2);
    }
  });
});

describe('rev12c client: cancel while the resume reads a problem body or waits on in-progress', () => {
  async function startProblem(kind: '409-hang' | '500-hang' | '409-wait') {
    const resumes: Seen[] = [];
    const server = createServer((req, res) => {
      req.resume();
      if (req.headers['last-event-id'] === undefined) {
        res.writeHead(200, {
          'content-type': 'text/event-stream',
          'idempotent-generation': 'g1',
        });
        res.write(FIRST);
        setTimeout(() => res.socket?.destroy(), 30);
        return;
      }
      const seen: Seen = { lastEventId: req.headers['last-event-id'] as string, res };
      resumes.push(seen);
      res.on('close', () => {
        seen.closedAt = performance.now();
      });
      const status = kind === '500-hang' ? 500 : 409;
      res.writeHead(status, {
        'content-type': 'application/problem+json',
        ...(kind === '409-wait' ? { 'retry-after': '1' } : {}),
      });
      const problem = `{"type":"https://idem.dev/problems/in-progress","status":${status}}`;
      // '-hang': half the problem body, then nothing (the client reads it, bounded by 5 s).
      if (kind === '409-wait') res.end(problem);
      else res.write(problem.slice(0, 20));
    });
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/s`, resumes };
  }

  for (const kind of ['409-hang', '500-hang', '409-wait'] as const) {
    it(`held: ${kind}: the cancel settles at once, the resume's connection is closed, no other request`, async () => {
      const { url, resumes } = await startProblem(kind);
      const response = await open(url);
      const reader = (response.body as ReadableStream<Uint8Array>).getReader();
      await reader.read();
      const pending = reader.read().catch(() => undefined);
      expect(await until(() => resumes.length === 1)).toBe(true);
      await sleep(100); // the client is reading the problem body (or waiting to retry)
      const at = performance.now();
      await reader.cancel(new Error('stop'));
      await pending;
      expect(performance.now() - at).toBeLessThan(500);
      expect(await until(() => resumes[0]?.closedAt !== undefined, 1_500)).toBe(true);
      await sleep(kind === '409-wait' ? 1_300 : 200);
      expect(resumes).toHaveLength(1);
    });
  }
});
