// Review round 10 (rev10a): a reader that cancels a resumable event stream while the client
// is reconnecting, against a loopback node:http server behind @idem/http. Findings are
// `it.fails` (they state the correct behaviour).
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { withIdempotency } from '@idem/http';
import { createMemoryStore } from '@idem/store-memory';
import { afterEach, describe, expect, it } from 'vitest';
import { createIdempotentFetch } from '../src/index.js';

const encoder = new TextEncoder();
const EVENTS = Array.from({ length: 60 }, (_, i) => `id: ${i + 1}\ndata: token ${i}\n\n`);

interface Harness {
  url: string;
  /** Per request: when the server saw it, and when its response connection closed. */
  requests: { at: number; closedAt?: number }[];
  close(): Promise<void>;
}

/**
 * Streams one event every 50 ms (3 s in all). The first response is cut after two events; the
 * resume's response headers come 300 ms after its request.
 */
async function start(): Promise<Harness> {
  const handle = withIdempotency(
    async () => {
      let n = 0;
      const body = new ReadableStream<Uint8Array>({
        async pull(controller) {
          if (n > 0) await new Promise((resolve) => setTimeout(resolve, 50));
          controller.enqueue(encoder.encode(EVENTS[n++] as string));
          if (n === EVENTS.length) controller.close();
        },
      });
      return new Response(body, { headers: { 'content-type': 'text/event-stream' } });
    },
    { store: createMemoryStore(), scope: 'global', onWarning: () => {} },
  );
  const requests: Harness['requests'] = [];
  const server: Server = createServer(async (req, res) => {
    const seen: Harness['requests'][number] = { at: performance.now() };
    requests.push(seen);
    res.on('close', () => {
      seen.closedAt = performance.now();
    });
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const headers = new Headers();
    for (const [name, value] of Object.entries(req.headers))
      if (typeof value === 'string') headers.set(name, value);
    const first = requests.length === 1;
    if (!first) await new Promise((resolve) => setTimeout(resolve, 300));
    const response = await handle(
      new Request(`http://127.0.0.1${req.url}`, {
        method: req.method,
        headers,
        body: Buffer.concat(chunks),
      }),
    );
    res.writeHead(response.status, Object.fromEntries(response.headers));
    const reader = (response.body as ReadableStream<Uint8Array>).getReader();
    let sent = 0;
    for (;;) {
      const read = await reader.read();
      if (read.done) break;
      if (res.destroyed) {
        await reader.cancel();
        return;
      }
      res.write(read.value);
      if (first && ++sent === 2) {
        await new Promise((resolve) => setTimeout(resolve, 20));
        res.socket?.destroy();
        await reader.cancel();
        return;
      }
    }
    res.end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

const harnesses: Harness[] = [];
afterEach(async () => {
  for (const harness of harnesses.splice(0)) await harness.close();
});

describe('rev10a client: cancelling a stream during its resume', () => {
  // FIXED (was FINDING LOW): body.cancel() while the client is resuming a broken stream cancels only the old (broken) reader: the resume's answer, when it comes, is never cancelled, so its connection stays open and the server keeps streaming into it until the stream ends.
  it('a reader that cancels during the resume: the resumed connection is closed too', async () => {
    const harness = await start();
    harnesses.push(harness);
    const response = await createIdempotentFetch()(`${harness.url}/v1/stream`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"stream":true}',
    });
    const reader = (response.body as ReadableStream<Uint8Array>).getReader();
    // Read until the client starts its resume (the server sees the second request).
    const reading = (async () => {
      for (;;) {
        const read = await reader.read().catch(() => ({ done: true as const }));
        if (read.done) return;
      }
    })();
    const until = performance.now() + 5_000;
    while (harness.requests.length < 2 && performance.now() < until)
      await new Promise((resolve) => setTimeout(resolve, 10));
    expect(harness.requests).toHaveLength(2);
    const cancelledAt = performance.now();
    // (It rejects with the old reader's break error: the cancel reached only the broken reader.)
    await reader.cancel('the user pressed stop').catch(() => undefined);
    await reading;
    // The resumed response starts 300 ms after its request and would stream ~3 s more.
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    const resumed = harness.requests[1] as { at: number; closedAt?: number };
    // Expected: the resume's connection closed soon after the cancel (or never opened).
    // Before the fix: still open 1.5 s after the cancel, the server still streaming into it.
    expect(resumed.closedAt, 'resumed connection still open').toBeDefined();
    expect((resumed.closedAt ?? Number.POSITIVE_INFINITY) - cancelledAt).toBeLessThan(1_000);
  });
});
