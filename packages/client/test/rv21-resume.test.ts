// rv21 (adversarial review of 4d4461b..642f445): @idem/client resumes an SSE stream after the last
// event whose id a header can carry, or from its start (an empty Last-Event-ID) when no such
// event was seen, skipping what it delivered. Attacks: a resume that meets a NEW execution
// (the first one broke and released its key) must never be spliced onto what was delivered,
// nor run the handler again for the same logical call. Real node:http servers on loopback.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type HttpIdempotencyOptions, withIdempotency } from '@idem/http';
import { createMemoryStore } from '@idem/store-memory';
import { afterEach, describe, expect, it } from 'vitest';
import { createIdempotentFetch } from '../src/index.js';

const servers: Server[] = [];
afterEach(async () => {
  for (const server of servers.splice(0))
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
});

/**
 * An SSE endpoint behind @idem/http: execution n sends `events(n)`, then, if `breaks(n)`, its
 * stream errors (the first execution failed: its key is released). Returns its URL and a
 * count of executions.
 */
async function start(
  events: (execution: number) => string[],
  breaks: (execution: number) => boolean,
  options: Partial<HttpIdempotencyOptions<Request>> = {},
) {
  let executions = 0;
  const handle = withIdempotency(
    async () => {
      const n = ++executions;
      const list = events(n);
      let at = 0;
      const body = new ReadableStream<Uint8Array>({
        async pull(controller) {
          await new Promise((resolve) => setTimeout(resolve, 10));
          if (at < list.length) return controller.enqueue(new TextEncoder().encode(list[at++]));
          if (breaks(n)) controller.error(new Error(`execution ${n} broke`));
          else controller.close();
        },
      });
      return new Response(body, { headers: { 'content-type': 'text/event-stream' } });
    },
    { store: createMemoryStore(), scope: 'global', onWarning: () => {}, ...options },
  );
  const server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const headers = new Headers();
    for (const [name, value] of Object.entries(req.headers))
      if (typeof value === 'string') headers.set(name, value);
    const response = await handle(
      new Request(`http://127.0.0.1${req.url}`, {
        method: req.method,
        headers,
        body: Buffer.concat(chunks),
      }),
    );
    res.writeHead(response.status, Object.fromEntries(response.headers));
    if (!response.body) return res.end();
    const reader = response.body.getReader();
    try {
      for (;;) {
        const read = await reader.read();
        if (read.done) break;
        res.write(read.value);
      }
      res.end();
    } catch {
      // The body broke: the connection is cut, as a server does.
      res.destroy();
    }
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    executions: () => executions,
  };
}

async function readAll(url: string) {
  const response = await createIdempotentFetch({ initialDelayMs: 10, maxDelayMs: 20 })(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: '{}',
  });
  return response.text().then(
    (text) => ({ text, error: undefined as unknown }),
    (error: unknown) => ({ text: undefined, error }),
  );
}

describe('rv21 @idem/client: a resume never splices two executions', () => {
  for (const [name, options] of [
    ['live streams on (the default)', {}],
    ['liveStreams: false', { liveStreams: false as const }],
  ] as const) {
    for (const [kind, ids] of [
      ['events without ids', ['', '']],
      ['events whose ids cannot be sent (a control character)', ['id: a\u0001\n', 'id: b\u0001\n']],
      ['events with ids', ['id: 1\n', 'id: 2\n']],
    ] as const) {
      it(`${name}, ${kind}: the first execution breaks after one event -> the body errors; never another execution's bytes, one execution`, async () => {
        // Execution 1 sends its first event, then breaks (its key is released); a later one
        // sends both events of the same length, and ends.
        const { url, executions } = await start(
          (n) =>
            n === 1
              ? [`${ids[0]}data: run ${n} first\n\n`]
              : [`${ids[0]}data: run ${n} first\n\n`, `${ids[1]}data: run ${n} second\n\n`],
          (n) => n === 1,
          options,
        );
        const { text, error } = await readAll(`${url}/v1/stream`);
        // What the caller read is one execution's stream, whole, or an error: never run 1's
        // first event followed by run 2's second.
        if (error === undefined) expect(text).not.toContain('run 2');
        expect(text ?? '').not.toMatch(/run 1[\s\S]*run 2/);
        expect(executions()).toBe(1);
      });
    }
  }
});
