import { generateKey } from '@idem/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config.js';
import { type RunningServer, startServer } from '../src/server.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('rev13: retries attached to a stream in flight whose clients went away (memory store)', () => {
  let server: RunningServer;
  beforeAll(async () => {
    server = await startServer(
      parseConfig({ PORT: '0', MODEL_CHUNK_DELAY_MS: '1', IDEM_OTEL: 'off' }),
    );
  });
  afterAll(async () => {
    await server?.close();
  });

  // FIXED (was FINDING LOW, availability of attach): the app's `deliver` middleware (src/app.ts) pumped
  // every event-stream response with `deliverStreamed`, which reads the body to its end
  // whether or not the client is still there. That is right for an execution (its outcome is
  // recorded when its body ends), but it does the same for a retry attached to the stream in
  // flight (and for a replay), which records nothing: once such a client leaves, the app goes
  // on reading the attached stream for nobody until the generation ends. @idem/http's bounds
  // on attached readers never apply (the reader is never cancelled; `stallMs`, "a reader whose
  // client has not taken a chunk is cut", never fires because the pump takes every chunk), so
  // the `maxReaders` (32) slots of the generation stay taken by clients that are gone and a
  // real retry gets 409 instead of the live stream until the first execution ends (minutes
  // for a long answer). Reproduce: a slow streamed completion; 32 retries with its key that
  // read one chunk and disconnect; a 33rd retry: 409 for the rest of the stream.
  // Fixed: `deliver` passes a response marked `Idempotent-Replayed: true` (an attached stream
  // or a replay: nothing to record) straight to the client, so that its disconnection cancels
  // the attached body and frees its slot (this test got 409 before).
  it('a retry attaches (200, live) once 32 earlier attached clients went away', async () => {
    const key = generateKey();
    const body = JSON.stringify({
      model: 'local-1',
      stream: true,
      messages: [
        { role: 'user', content: `[slow:700] a long answer ${generateKey().slice(0, 8)}` },
      ],
    });
    const send = (signal: AbortSignal) =>
      fetch(`${server.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': key },
        body,
        signal,
      });
    const firstAbort = AbortSignal.timeout(60_000);
    const first = await send(firstAbort);
    expect(first.status).toBe(200);
    let firstEnded = false;
    const firstDone = first
      .text()
      .catch(() => '')
      .finally(() => {
        firstEnded = true;
      });
    try {
      for (let i = 0; i < 32; i++) {
        const gone = new AbortController();
        const attached = await send(gone.signal);
        expect(attached.status).toBe(200);
        expect(attached.headers.get('idempotent-replayed')).toBe('true');
        await attached.body?.getReader().read();
        gone.abort();
      }
      // The server learns of each disconnection within moments; the stream goes on for
      // many seconds more ([slow:700]).
      let status = 0;
      let replayed: string | null = null;
      for (let i = 0; i < 15; i++) {
        const probe = new AbortController();
        const retry = await send(probe.signal);
        status = retry.status;
        replayed = retry.headers.get('idempotent-replayed');
        probe.abort();
        if (status === 200) break;
        await sleep(200);
      }
      // Attached to the stream in flight, not a replay of a finished one.
      expect({ status, replayed, firstEnded }).toEqual({
        status: 200,
        replayed: 'true',
        firstEnded: false,
      });
    } finally {
      await firstDone;
    }
  }, 30_000);
});
