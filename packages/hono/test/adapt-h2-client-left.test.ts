// @hono/node-server over h2c (node:http2's compatibility response): a client that resets its
// stream mid-body. The body is still read to its end and recorded once, and the retry gets
// the whole replay (adapt-left: the "client gone" signal took node:http2's
// `writableFinished`, true once a reset closed the stream, for a response sent whole).
import { constants, createServer as createH2Server, connect as h2Connect } from 'node:http2';
import { setTimeout as sleep } from 'node:timers/promises';
import { type ServerType, serve } from '@hono/node-server';
import { createMemoryStore } from '@idem/store-memory';
import { Hono } from 'hono';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency, stream } from '../src/index.js';

const CHUNKS = ['chunk 0\n', 'chunk 1\n', 'chunk 2\n', 'chunk 3\n'];
let server: ServerType;
let port = 0;
let runs = 0;

beforeAll(async () => {
  const app = new Hono();
  app.use(idempotency({ store: createMemoryStore(), scope: 'global', leaseMs: 3_000 }));
  app.post('/stream', (c) => {
    runs++;
    return stream(c, async (out) => {
      for (const [i, chunk] of CHUNKS.entries()) {
        if (i > 0) await out.sleep(40);
        await out.write(chunk);
      }
    });
  });
  port = await new Promise<number>((resolve) => {
    server = serve(
      { fetch: app.fetch, port: 0, hostname: '127.0.0.1', createServer: createH2Server },
      (info) => resolve(info.port),
    );
  });
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

interface Answer {
  status: number;
  replayed: boolean;
  body: string;
}

/** A keyed POST over h2c; `resetAfterFirst` resets the stream (CANCEL) at its first bytes. */
function post(key: string, resetAfterFirst = false): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const session = h2Connect(`http://127.0.0.1:${port}`);
    session.on('error', () => {});
    const req = session.request({ ':method': 'POST', ':path': '/stream', 'idempotency-key': key });
    const answer: Answer = { status: 0, replayed: false, body: '' };
    req.on('response', (head) => {
      answer.status = Number(head[':status']);
      answer.replayed = head['idempotent-replayed'] === 'true';
    });
    req.on('data', (chunk: Buffer) => {
      answer.body += chunk.toString();
      if (resetAfterFirst) req.close(constants.NGHTTP2_CANCEL);
    });
    req.on('error', () => {});
    req.on('close', () => {
      session.close();
      if (answer.status) resolve(answer);
      else reject(new Error('no response'));
    });
    req.end();
  });
}

describe('@idem/hono over h2c, a client that resets its stream mid-body', () => {
  it('records the whole body once; the retry replays it', async () => {
    const key = `h2-left-${Math.random()}`;
    const left = await post(key, true);
    expect(left.body).toBe(CHUNKS[0]);
    let again = await post(key);
    // Bounded: 40 tries of 50 ms (the body ends ~120 ms after the reset).
    for (let i = 0; again.status === 409 && i < 40; i++) {
      await sleep(50);
      again = await post(key);
    }
    expect(again.status).toBe(200);
    expect(again.replayed).toBe(true);
    expect(again.body).toBe(CHUNKS.join(''));
    expect(runs).toBe(1);
  });
});
