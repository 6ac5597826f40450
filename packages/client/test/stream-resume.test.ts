import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { withIdempotency } from '@idem/http';
import { createMemoryStore } from '@idem/store-memory';
import OpenAI from 'openai';
import { afterEach, describe, expect, it } from 'vitest';
import { createIdempotentFetch, isIdemClientError } from '../src/index.js';

const encoder = new TextEncoder();
const WORDS = ['Once', ' upon', ' a', ' time', ' there', ' was', ' a', ' stream', '.'];

function chunkEvent(n: number, delta: object, finish: string | null): string {
  const data = {
    id: 'chatcmpl-1',
    object: 'chat.completion.chunk',
    created: 1_764_288_000,
    model: 'm',
    choices: [{ index: 0, delta, finish_reason: finish }],
  };
  return `id: ${n}\ndata: ${JSON.stringify(data)}\n\n`;
}

/** The whole stream the model sends, event by event. */
const EVENTS = [
  ...WORDS.map((word, i) =>
    chunkEvent(i + 1, i === 0 ? { role: 'assistant', content: word } : { content: word }, null),
  ),
  chunkEvent(WORDS.length + 1, {}, 'stop'),
  `id: ${WORDS.length + 2}\ndata: [DONE]\n\n`,
];
const FULL = EVENTS.join('');

interface Harness {
  url: string;
  executions: () => number;
  requests: { lastEventId: string | undefined; generation: string | undefined }[];
  close(): Promise<void>;
}

/**
 * A loopback chat-completions server behind @idem/http (memory store): it streams one event
 * every 30 ms; the connection of the first request is cut after `cutAfter` bytes, mid-event.
 */
async function start(cutAfter: number): Promise<Harness> {
  let executions = 0;
  const handle = withIdempotency(
    async () => {
      executions++;
      let n = 0;
      const body = new ReadableStream<Uint8Array>({
        async pull(controller) {
          if (n > 0) await new Promise((resolve) => setTimeout(resolve, 30));
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
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const headers = new Headers();
    for (const [name, value] of Object.entries(req.headers))
      if (typeof value === 'string') headers.set(name, value);
    requests.push({
      lastEventId: headers.get('last-event-id') ?? undefined,
      generation: headers.get('idempotent-generation') ?? undefined,
    });
    const first = requests.length === 1;
    const response = await handle(
      new Request(`http://127.0.0.1${req.url}`, {
        method: req.method,
        headers,
        body: Buffer.concat(chunks),
      }),
    );
    res.writeHead(response.status, Object.fromEntries(response.headers));
    let sent = 0;
    const reader = response.body!.getReader();
    for (;;) {
      const read = await reader.read();
      if (read.done) break;
      if (first && sent + read.value.length > cutAfter) {
        // The connection drops mid-event: part of this chunk went out, then nothing.
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

describe('resuming a broken event stream (same key, Last-Event-ID)', () => {
  it('gives the reader one whole stream, byte for byte, through a cut mid-event; the model runs once', async () => {
    const cut = EVENTS.slice(0, 3).join('').length + 25;
    const harness = await start(cut);
    harnesses.push(harness);
    const idempotentFetch = createIdempotentFetch();
    const response = await idempotentFetch(`${harness.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"stream":true}',
    });
    expect(await response.text()).toBe(FULL);
    expect(harness.executions()).toBe(1);
    expect(harness.requests).toEqual([
      { lastEventId: undefined, generation: undefined },
      { lastEventId: '3', generation: '1' },
    ]);
  });

  it('the openai SDK gets one complete stream through a cut', async () => {
    const harness = await start(EVENTS.slice(0, 4).join('').length + 40);
    harnesses.push(harness);
    const client = new OpenAI({
      apiKey: 'test',
      baseURL: `${harness.url}/v1`,
      maxRetries: 0,
      fetch: createIdempotentFetch(),
    });
    const stream = await client.chat.completions.create({
      model: 'm',
      messages: [{ role: 'user', content: 'tell me' }],
      stream: true,
    });
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
    expect(text).toBe(WORDS.join(''));
    expect(harness.executions()).toBe(1);
    expect(harness.requests.map((r) => r.lastEventId)).toEqual([undefined, '4']);
  });

  it('leaves a broken body broken with resumeStreams: false (one request, an error, never a silent end)', async () => {
    const harness = await start(EVENTS.slice(0, 2).join('').length + 5);
    harnesses.push(harness);
    const idempotentFetch = createIdempotentFetch({ resumeStreams: false });
    const response = await idempotentFetch(`${harness.url}/v1/chat/completions`, {
      method: 'POST',
      body: '{"stream":true}',
    });
    const error = await response.text().then(
      () => undefined,
      (reason: unknown) => reason,
    );
    expect(error).toBeInstanceOf(Error);
    expect(isIdemClientError(error)).toBe(false);
    expect(harness.requests).toHaveLength(1);
  });
});
