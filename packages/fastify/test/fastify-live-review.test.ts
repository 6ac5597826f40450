import { request } from 'node:http';
import { Readable } from 'node:stream';
import { createMemoryStore } from '@idem/store-memory';
import Fastify from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// Review of the Node read-ahead: a piped stream that errors mid-way while its first client is
// paused (read ahead of it) is not recorded, and a retry does not replay a cut body.

const app = Fastify({ forceCloseConnections: true });
let url = '';
let runs = 0;
let failed: () => void = () => {};

beforeAll(async () => {
  await app.register(idempotency, {
    store: createMemoryStore(),
    scope: 'global',
    onWarning: () => {},
  });
  app.post('/broken', async (_request, reply) => {
    runs++;
    async function* events() {
      for (let n = 0; n < 8; n++) yield `id: ${n}\ndata: ${'b'.repeat(64 * 1024)}\n\n`;
      failed();
      throw new Error('the source broke');
    }
    return reply.type('text/event-stream').send(Readable.from(events()));
  });
  url = await app.listen({ port: 0, host: '127.0.0.1' });
});
afterAll(() => app.close());

function post(key: string, pause: boolean) {
  return new Promise<{ status: number; body: string; error?: string }>((resolve) => {
    const req = request(`${url}/broken`, {
      method: 'POST',
      agent: false,
      headers: { 'idempotency-key': key, 'idempotent-attach': 'false' },
    });
    req.on('response', (res) => {
      if (pause) {
        res.pause();
        resolve({ status: res.statusCode ?? 0, body: '' });
        return;
      }
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        body += chunk;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', (error) =>
        resolve({ status: res.statusCode ?? 0, body, error: error.message }),
      );
      res.on('aborted', () => resolve({ status: res.statusCode ?? 0, body, error: 'aborted' }));
    });
    req.on('error', (error) => resolve({ status: 0, body: '', error: error.message }));
    req.end();
  });
}

describe('Fastify read-ahead, reviewed', () => {
  it('a piped stream that errors while its first client is paused is not replayed as a success', async () => {
    const key = `broken-${Date.now()}`;
    const broke = new Promise<void>((resolve) => {
      failed = resolve;
    });
    const first = await post(key, true);
    expect(first.status).toBe(200);
    await broke;
    // The key is released once the error reaches the recorder: until then a retry gets 409.
    let retry = await post(key, false);
    for (let n = 0; n < 50 && retry.status === 409; n++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      retry = await post(key, false);
    }
    // The retry ran the route again (whose source broke again): no cut body replayed as 200.
    expect(runs).toBe(2);
    expect(retry.error).toBe('aborted');
  });
});
