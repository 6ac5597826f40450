// Review round 10 (rev10a): resuming a broken event stream whose event ids are not ASCII,
// against a loopback node:http server behind @idem/http. Findings are `it.fails` (they state
// the correct behaviour); attacks that held are plain `it`.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { withIdempotency } from '@idem/http';
import { createMemoryStore } from '@idem/store-memory';
import { afterEach, describe, expect, it } from 'vitest';
import { createIdempotentFetch } from '../src/index.js';

const encoder = new TextEncoder();

interface Harness {
  url: string;
  executions: () => number;
  lastEventIds: (string | undefined)[];
  close(): Promise<void>;
}

/** An SSE endpoint behind @idem/http; the first response's connection is cut after `cutAfter` bytes. */
async function start(events: string[], cutAfter: number): Promise<Harness> {
  return startRaw(
    events.map((event) => encoder.encode(event)),
    cutAfter,
  );
}

async function startRaw(events: Uint8Array[], cutAfter: number): Promise<Harness> {
  let executions = 0;
  const handle = withIdempotency(
    async () => {
      executions++;
      let n = 0;
      const body = new ReadableStream<Uint8Array>({
        async pull(controller) {
          if (n > 0) await new Promise((resolve) => setTimeout(resolve, 20));
          controller.enqueue(events[n++] as Uint8Array);
          if (n === events.length) controller.close();
        },
      });
      return new Response(body, { headers: { 'content-type': 'text/event-stream' } });
    },
    { store: createMemoryStore(), scope: 'global', onWarning: () => {} },
  );
  const lastEventIds: (string | undefined)[] = [];
  const server: Server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const headers = new Headers();
    for (const [name, value] of Object.entries(req.headers))
      if (typeof value === 'string') headers.set(name, value);
    lastEventIds.push(headers.get('last-event-id') ?? undefined);
    const first = lastEventIds.length === 1;
    const response = await handle(
      new Request(`http://127.0.0.1${req.url}`, {
        method: req.method,
        headers,
        body: Buffer.concat(chunks),
      }),
    );
    res.writeHead(response.status, Object.fromEntries(response.headers));
    let sent = 0;
    const reader = (response.body as ReadableStream<Uint8Array>).getReader();
    for (;;) {
      const read = await reader.read();
      if (read.done) break;
      if (first && sent + read.value.length > cutAfter) {
        res.write(read.value.subarray(0, cutAfter - sent));
        await new Promise((resolve) => setTimeout(resolve, 20));
        res.socket?.destroy();
        await reader.cancel();
        return;
      }
      sent += read.value.length;
      res.write(read.value);
    }
    res.end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    executions: () => executions,
    lastEventIds,
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

/** The header value as the server reads it: the id's UTF-8 bytes, one Latin-1 character each. */
const wire = (id: string) => Buffer.from(id, 'utf8').toString('latin1');

const eventsWithIds = (ids: string[]) => ids.map((id, i) => `id: ${id}\ndata: part ${i}\n\n`);

async function readThroughCut(ids: string[]): Promise<{ text: string; harness: Harness }> {
  const events = eventsWithIds(ids);
  // Cut in the middle of the fourth event, after three whole events with ids.
  const harness = await start(events, Buffer.byteLength(events.slice(0, 3).join('')) + 5);
  harnesses.push(harness);
  const response = await createIdempotentFetch()(`${harness.url}/v1/stream`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: '{"stream":true}',
  });
  return { text: await response.text(), harness };
}

describe('rev10a client: resuming streams whose event ids are not ASCII', () => {
  it('held: ids in Latin-1 (é) resume exactly, one execution', async () => {
    const ids = ['é-1', 'é-2', 'é-3', 'é-4', 'é-5'];
    const { text, harness } = await readThroughCut(ids);
    expect(text).toBe(eventsWithIds(ids).join(''));
    expect(harness.executions()).toBe(1);
    expect(harness.lastEventIds).toHaveLength(2);
    // Sent as UTF-8 (rev12; before, the one Latin-1 byte of é), and read back so by @idem/http.
    expect(harness.lastEventIds[1]).toBe(wire('é-3'));
  });

  // FIXED (was FINDING LOW): an event id with a character past U+00FF (CJK, emoji: any UTF-8 the SSE grammar allows) could not be put in the Last-Event-ID header (Headers takes ByteStrings): the resume threw before it was sent and the body errored with STREAM_NOT_RESUMABLE instead of resuming. The id now goes as its UTF-8 bytes (as EventSource sends it) and @idem/http decodes it so.
  it('ids past Latin-1 (事件-n) resume exactly too, one execution', async () => {
    const ids = ['事件-1', '事件-2', '事件-3', '事件-4', '事件-5'];
    // Expected: the whole stream, byte for byte, through the cut (Last-Event-ID sent as the
    // id's UTF-8 bytes, as EventSource does, and read back so by @idem/http). Observed: the
    // read rejects with STREAM_NOT_RESUMABLE ("the resume failed", cause: TypeError from
    // Headers.set), one request only.
    const { text, harness } = await readThroughCut(ids);
    expect(text).toBe(eventsWithIds(ids).join(''));
    expect(harness.executions()).toBe(1);
    expect(harness.lastEventIds).toEqual([undefined, wire('事件-3')]);
  });

  it('ids at the edges (U+0080, U+00FF, astral, U+FFFD, mixed with ASCII) resume exactly, one execution each', async () => {
    for (const prefix of ['\u0080', '\u00ff', '😀', '\ufffd', 'a\u00e9事😀 b']) {
      const ids = [1, 2, 3, 4, 5].map((n) => `${prefix}-${n}`);
      const { text, harness } = await readThroughCut(ids);
      expect(text).toBe(eventsWithIds(ids).join(''));
      expect(harness.executions()).toBe(1);
      expect(harness.lastEventIds).toEqual([undefined, wire(`${prefix}-3`)]);
    }
  });

  it('ASCII ids go as they are', async () => {
    const ids = ['a-1', 'a-2', 'a-3', 'a-4', 'a-5'];
    const { text, harness } = await readThroughCut(ids);
    expect(text).toBe(eventsWithIds(ids).join(''));
    expect(harness.lastEventIds).toEqual([undefined, 'a-3']);
  });

  it('an id the stream sent as bytes that are not UTF-8 (read as U+FFFD on both sides) resumes exactly', async () => {
    // 0xff is no UTF-8: the client and @idem/http both read the id with U+FFFD in its place.
    const raw = [1, 2, 3, 4, 5].map((n) =>
      Buffer.concat([
        Buffer.from('id: '),
        Buffer.from([0xff]),
        Buffer.from(`-${n}\ndata: ${n}\n\n`),
      ]),
    );
    const events = raw.map((bytes) => bytes.toString('latin1'));
    const harness = await startRaw(raw, raw.slice(0, 3).reduce((sum, b) => sum + b.length, 0) + 5);
    harnesses.push(harness);
    const response = await createIdempotentFetch()(`${harness.url}/v1/stream`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{}',
    });
    const bytes = Buffer.from(await response.arrayBuffer());
    expect(bytes.toString('latin1')).toBe(events.join(''));
    expect(harness.executions()).toBe(1);
    expect(harness.lastEventIds).toEqual([undefined, wire('\ufffd-3')]);
  });
});
