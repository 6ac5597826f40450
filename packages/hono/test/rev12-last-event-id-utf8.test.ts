/**
 * rev12: Hono reads `Last-Event-ID` from the Web Request's Headers (@hono/node-server builds
 * them from Node's header values: a byte string, one Latin-1 character a byte); @idem/http
 * decodes it by UTF-8, so that an id past Latin-1 names its event exactly, as Express and the
 * Web handler do. Bytes that are not UTF-8: 412, nothing run.
 * Requests sent with node:http, so the header bytes are exactly the ones given.
 */
import { request as httpRequest } from 'node:http';
import { type ServerType, serve } from '@hono/node-server';
import { createMemoryStore } from '@idem/store-memory';
import { Hono } from 'hono';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

const IDS = ['事件-1', 'é-2', '😀-3', '\u0080-4', 'plain-5'];
const events = IDS.map((id, i) => `id: ${id}\ndata: ${i}\n\n`);
/** A header value holding `bytes`, one Latin-1 character a byte. */
const byteString = (bytes: Uint8Array | number[]) => Buffer.from(bytes).toString('latin1');
const utf8Header = (id: string) => byteString(Buffer.from(id, 'utf8'));

let server: ServerType;
let url: string;
let runs = 0;

beforeAll(async () => {
  const app = new Hono();
  app.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
  app.post('/stream', () => {
    runs++;
    const encoder = new TextEncoder();
    let n = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        controller.enqueue(encoder.encode(events[n++] as string));
        if (n === events.length) controller.close();
      },
    });
    return new Response(body, { headers: { 'content-type': 'text/event-stream' } });
  });
  const port = await new Promise<number>((resolve) => {
    server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, (info) =>
      resolve(info.port),
    );
  });
  url = `http://127.0.0.1:${port}`;
});
afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
});

function post(key: string, headers: Record<string, string> = {}) {
  return new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = httpRequest(`${url}/stream`, {
      method: 'POST',
      headers: { 'idempotency-key': key, 'content-type': 'application/json', ...headers },
    });
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
    // A Buffer: a string first chunk would be written with the head in UTF-8, re-encoding
    // the header's bytes past 0x7F.
    req.end(Buffer.from('{}'));
  });
}

describe('rev12 Hono: Last-Event-ID as UTF-8', () => {
  it('resumes after ids past Latin-1 (and in U+0080..U+00FF) exactly, one execution', async () => {
    expect((await post('u1')).body).toBe(events.join(''));
    for (let i = 0; i < IDS.length; i++) {
      const resumed = await post('u1', {
        'last-event-id': utf8Header(IDS[i] as string),
        'idempotent-generation': '1',
      });
      expect([resumed.status, resumed.body]).toEqual([200, events.slice(i + 1).join('')]);
    }
    expect(runs).toBe(1);
  });

  it('bytes that are not UTF-8 (a raw Latin-1 é): 412, nothing run', async () => {
    const before = runs;
    await post('u2');
    const answer = await post('u2', {
      'last-event-id': byteString([0xe9, 0x2d, 0x32]),
      'idempotent-generation': '1',
    });
    expect(answer.status).toBe(412);
    expect(JSON.parse(answer.body)).toMatchObject({ status: 412, title: 'Unknown Last-Event-ID' });
    expect(runs).toBe(before + 1);
  });
});
