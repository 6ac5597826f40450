import { type ServerType, serve } from '@hono/node-server';
import { createMemoryStore } from '@idem/store-memory';
import { Hono } from 'hono';
import { streamSSE, streamText } from 'hono/streaming';
import { afterAll, describe, expect, it } from 'vitest';
import {
  idempotency,
  streamSSE as idemStreamSSE,
  streamText as idemStreamText,
} from '../src/index.js';

// rev10: the README's own completion example (`streamSSE`) when the work fails mid-stream.
// Hono's stream helpers catch what the callback throws (console.error, or `onError`) and then
// close the stream normally: the body ends cleanly, and the recorder takes it for a success.
// The design: "A stream that breaks is not a success"; an LLM call that failed after its
// first tokens must be run again by the retry, not replayed truncated for the retention.

const servers: ServerType[] = [];
// Put back after the file, whatever the starts did: the file shares its worker process with
// the files after it (a start's own restore, run in order, put back the previous start's
// silencer and left console.error silenced for them).
const consoleError = console.error;
afterAll(async () => {
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
  console.error = consoleError;
});

async function start(abortOnError: boolean) {
  let runs = 0;
  // Without onError, Hono's helper console.errors the throw: kept out of the test output.
  if (!abortOnError) console.error = () => {};
  const app = new Hono();
  app.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
  app.post('/completions', (c) =>
    streamSSE(
      c,
      async (stream) => {
        runs++;
        await stream.writeSSE({ data: 'Hel' });
        // Past the recorder's read-ahead: the body streams (see rev10-short-stream for a
        // body that ends within it).
        await stream.sleep(50);
        if (runs === 1) throw new Error('the model provider failed mid-stream');
        await stream.writeSSE({ data: 'lo' });
      },
      abortOnError
        ? async (error, stream) => {
            // The only way out of a clean end with Hono's helper: abort its writer, which
            // is private (`stream.abort()` cancels the reader, which ends the body cleanly).
            await (stream as unknown as { writer: WritableStreamDefaultWriter }).writer.abort(
              error,
            );
          }
        : undefined,
    ),
  );
  const port = await new Promise<number>((resolve) => {
    const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, (info) =>
      resolve(info.port),
    );
    servers.push(server);
  });
  return { port, runs: () => runs };
}

async function post(port: number, key: string) {
  const response = await fetch(`http://127.0.0.1:${port}/completions`, {
    method: 'POST',
    headers: { 'idempotency-key': key },
    signal: AbortSignal.timeout(5_000),
  });
  const text = await response.text().catch(() => '(cut)');
  return {
    status: response.status,
    replayed: response.headers.get('idempotent-replayed') === 'true',
    text,
  };
}

describe('rev10 hono: a streamSSE callback that throws mid-stream', () => {
  // LIMIT (documented, rev21): left as it is for Hono's own helpers. They catch the throw
  // inside a closure of theirs and then close the stream as on success; what reaches the
  // middleware (the response, its body's clean end) is the same as for a stream that ended
  // well, and the only trace (console.error, or onError) is not the middleware's to watch
  // without false positives (another request's log line). @idem/hono's streamSSE / stream /
  // streamText (test/stream-helpers.test.ts) are the fix to use; the middleware now warns
  // (onWarning, once) when a response looks made by Hono's own streamSSE / streamText (test
  // below), and the README says so at its example and under "streams that fail".
  // FINDING (MEDIUM): Hono's streamSSE/stream helpers swallow the callback's error and close the body normally, so idem records the truncated stream as a final 200 and every retry for 24 h replays "Hel" without running again; neither README says so (the flagship example is exactly this)
  it.fails('the retry runs the completion again instead of replaying the truncated stream', async () => {
    const { port, runs } = await start(false);
    const first = await post(port, 'sse-fail');
    expect(first.text).toBe('data: Hel\n\n');
    const retry = await post(port, 'sse-fail');
    // Observed: replayed: true, body "data: Hel\n\n", runs() === 1.
    expect(retry.replayed).toBe(false);
    expect(runs()).toBe(2);
  });

  it('held: aborting the helper writer in onError makes the body break: released, the retry runs and gets the whole stream', async () => {
    const { port, runs } = await start(true);
    const first = await post(port, 'sse-abort');
    expect(first.text === '(cut)' || first.text === 'data: Hel\n\n').toBe(true);
    const retry = await post(port, 'sse-abort');
    expect(retry).toMatchObject({
      status: 200,
      replayed: false,
      text: 'data: Hel\n\ndata: lo\n\n',
    });
    expect(runs()).toBe(2);
    const replay = await post(port, 'sse-abort');
    expect(replay).toMatchObject({ replayed: true, text: 'data: Hel\n\ndata: lo\n\n' });
  });
});

describe("rev21 hono: a warning for Hono's own stream helpers behind idempotency()", () => {
  async function warningsFor(helpers: 'hono' | 'idem') {
    const warnings: string[] = [];
    const app = new Hono();
    app.use(
      idempotency({
        store: createMemoryStore(),
        scope: 'global',
        onWarning: (message) => {
          warnings.push(message);
        },
      }),
    );
    const sse = helpers === 'hono' ? streamSSE : idemStreamSSE;
    const text = helpers === 'hono' ? streamText : idemStreamText;
    app.post('/sse', (c) => sse(c, async (stream) => stream.writeSSE({ data: 'a' })));
    app.post('/text', (c) =>
      text(c, async (stream) => {
        await stream.write('a');
      }),
    );
    for (const [path, key] of [
      ['/sse', 'w1'],
      ['/text', 'w2'],
      ['/sse', 'w3'],
    ]) {
      const response = await app.request(path as string, {
        method: 'POST',
        headers: { 'idempotency-key': key as string },
      });
      expect(response.status).toBe(200);
      await response.text();
    }
    return warnings;
  }

  it("Hono's streamSSE / streamText: one warning naming @idem/hono's helpers", async () => {
    const warnings = await warningsFor('hono');
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/Hono's own streamSSE or streamText/);
    expect(warnings[0]).toMatch(/from @idem\/hono/);
  });

  it("@idem/hono's helpers: no warning", async () => {
    expect(await warningsFor('idem')).toEqual([]);
  });
});
